package protosim

import "fmt"

func (s *Sim) violate(kind, format string, args ...any) {
	if s.fail != nil {
		return
	}
	s.fail = &Violation{Step: s.step, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	s.tracef("VIOLATION %s", s.fail.Detail)
}

// check runs after every step.
//
// I1: sold + reserved over all stores (for a store that lost writes and is
// not reconciled yet, the units its buyers hold), and the units buyers
// actually hold, never exceed the total. I2: each store's ceiling is within its net grant
// (except while a store that lost writes awaits reconciliation: it may not
// sell then, which reserve checks), net grants sum within the total, and the
// allocation's counters never decrease.
func (s *Sim) check() {
	a := s.etcd.alloc
	var inStores, held int64
	for _, rg := range s.regions {
		held += rg.held
		if rg.lost {
			// Its counters are a stale copy (reservations since erased,
			// ended ones resurrected) until reconciled; it cannot sell.
			inStores += rg.held
			continue
		}
		inStores += rg.ledger.Sold + rg.ledger.Reserved
	}
	if inStores > a.Total {
		s.violate("I1", "sold+reserved over regions %d > total %d", inStores, a.Total)
	}
	if held > a.Total {
		s.violate("I1-held", "buyers hold %d units > total %d", held, a.Total)
	}
	if err := a.Check(); err != nil {
		s.violate("I2-sum", "%v", err)
	}
	var cutOff int64
	for _, rg := range s.regions {
		if s.net.cut[rg.name] {
			cutOff += rg.ledger.Available()
		}
	}
	s.stats.CutOffPeak = max(s.stats.CutOffPeak, cutOff)
	for _, rg := range s.regions {
		r := a.Regions[rg.name]
		if r.Granted < s.prevGranted[rg.name] || r.Released < s.prevReleased[rg.name] {
			s.violate("I2-monotone", "%s granted %d->%d released %d->%d", rg.name,
				s.prevGranted[rg.name], r.Granted, s.prevReleased[rg.name], r.Released)
		}
		s.prevGranted[rg.name], s.prevReleased[rg.name] = r.Granted, r.Released
		if rg.held > r.Net() {
			// Units are sold under a ceiling within the net grant, and a
			// release only gives up unused units: buyers in a region can
			// never hold more than its net grant, lost writes or not.
			s.violate("I1-region", "%s buyers hold %d units > net grant %d", rg.name, rg.held, r.Net())
		}
		if rg.lost {
			continue
		}
		l := rg.ledger
		if l.Ceiling() > r.Net() {
			s.violate("I2", "%s ceiling %d (granted_seen %d - released_local %d) > net grant %d (granted %d - released %d)",
				rg.name, l.Ceiling(), l.GrantedSeen, l.ReleasedLocal, r.Net(), r.Granted, r.Released)
		}
		if rg.held > l.Sold+l.Reserved {
			s.violate("I1-region", "%s buyers hold %d units but its store counts sold %d + reserved %d",
				rg.name, rg.held, l.Sold, l.Reserved)
		}
	}
}

// finish runs once the healed phase is over: demand was there everywhere, so
// nothing may still be sellable; what buyers do not hold is stranded.
func (s *Sim) finish() {
	a := s.etcd.alloc
	sellable := a.Unallocated()
	for _, rg := range s.regions {
		s.stats.Sold += rg.held
		sellable += rg.ledger.Available()
	}
	s.stats.Stranded = a.Total - s.stats.Sold
	if sellable > 0 {
		s.violate("liveness", "%d units still sellable after the healed phase (unallocated %d)", sellable, a.Unallocated())
	}
	if s.cfg.Burst && s.stats.Sold*100 < a.Total*99 {
		s.violate("liveness", "the burst sold %d of %d units, under 99%%", s.stats.Sold, a.Total)
	}
	// Every release a region made is acknowledged once nothing is pending:
	// a unit given up in Redis but never counted in etcd is lost for good.
	for _, rg := range s.regions {
		if r, l := a.Regions[rg.name], rg.ledger; r.Pending == nil && !rg.lost && l.ReleasedLocal != r.Released {
			s.violate("lost-release", "%s released_local %d in Redis, released %d acknowledged, nothing pending", rg.name, l.ReleasedLocal, r.Released)
		}
	}
	// Every unit is accounted for: in the pool, granted but not applied
	// yet, held by buyers or available in a region, or released by a
	// region and not acknowledged yet. A unit in none of these was lost
	// (stranded for good) or made up.
	acc := a.Unallocated()
	for _, rg := range s.regions {
		r, l := a.Regions[rg.name], rg.ledger
		acc += (r.Granted - l.GrantedSeen) + l.Sold + l.Reserved + l.Available() + (l.ReleasedLocal - r.Released)
	}
	if acc != a.Total {
		s.violate("accounting", "pool, unapplied grants, sold, reserved, available and unacknowledged releases sum to %d, not the total %d", acc, a.Total)
	}
}
