package protosim

import (
	"errors"
	"strconv"

	"flashsale/quota"
)

type purchaseState int

const (
	pActive purchaseState = iota
	pConfirmed
	pEnded  // cancelled or expired: the unit went back
	pErased // a failover erased it from Redis; the order store still has it
)

// purchase is a reservation as its buyer (and the order store) know it.
type purchase struct {
	id, req string
	state   purchaseState
}

// Buyer behaviour.
const (
	demandShiftEvery = 40 // steps between demand changes in the main phase
	healRate         = 1.5
	sweepEvery       = 10 // steps between expiry sweeps
	quietSteps       = 25 // the last steps: no sweeps, so the end state is settled
)

// shiftDemand moves the crowd: one region gets hot, the others get a
// trickle or nothing, so quota has to follow demand.
func (s *Sim) shiftDemand() {
	hot := s.rng.IntN(len(s.regions))
	for i, rg := range s.regions {
		switch {
		case i == hot:
			rg.rate = 0.5 + s.rng.Float64()
		case s.rng.IntN(2) == 0:
			rg.rate = 0
		default:
			rg.rate = 0.1 * s.rng.Float64()
		}
	}
	s.tracef("demand shifts: %s is hot", s.regions[hot].name)
}

func (s *Sim) buyers(rg *region) {
	n := int(rg.rate)
	if s.rng.Float64() < rg.rate-float64(n) {
		n++
	}
	rg.demand = 0.9*rg.demand + 0.1*float64(n)
	for range n {
		s.reserve(rg)
	}

	pConfirm, pCancel := 0.05, 0.01
	switch {
	case s.cfg.Burst:
		pConfirm, pCancel = 0, 0
	case s.heal:
		pConfirm, pCancel = 0.5, 0
	}
	l := rg.ledger
	for _, p := range rg.active {
		if p.state != pActive {
			continue
		}
		x := s.rng.Float64()
		if x >= pConfirm+pCancel {
			continue
		}
		var err error
		if x < pConfirm {
			err = l.Confirm(p.id)
		} else {
			err = l.Cancel(p.id)
		}
		switch {
		case errors.Is(err, quota.ErrHalted):
			// A stopped region (halted, or a new primary) cannot tell:
			// the buyer still holds the unit and tries again in a later
			// step, as the seller's 503 halted tells it to.
			s.stats.HaltedFinishes++
		case err != nil:
			// A failover erased it; the buyer still holds the unit and
			// the order store counts it.
			p.state = pErased
			s.stats.LostResv++
		case x < pConfirm:
			p.state = pConfirmed
			s.stats.Confirms++
		default:
			p.state = pEnded
			rg.held--
			s.stats.CancelsExpires++
		}
	}
	if s.step%sweepEvery == 0 && s.step < s.cfg.MainSteps+s.cfg.HealSteps-quietSteps {
		for _, id := range l.Expire(s.now, 1000) {
			if p := rg.byReq[l.Resv[id].RequestID]; p.state == pActive {
				p.state = pEnded
				rg.held--
				s.stats.CancelsExpires++
			}
			// A payment that comes too late: the unit went back to stock,
			// so the reservation must stay expired (DESIGN I4).
			if s.rng.Float64() < 0.2 {
				s.stats.LateConfirms++
				if err := l.Confirm(id); err == nil {
					s.violate("I4", "%s confirmed reservation %s after it expired and its unit went back to stock", rg.name, id)
				}
			}
		}
	}
	keep := rg.active[:0]
	for _, p := range rg.active {
		if p.state == pActive {
			keep = append(keep, p)
		}
	}
	clear(rg.active[len(keep):])
	rg.active = keep
}

// sellerRefresh is how often (steps) the sellers read their counters, and
// with them the seller epoch (the seller's RefreshInterval).
const sellerRefresh = 5

func (s *Sim) reserve(rg *region) {
	if s.step >= rg.refreshAt {
		rg.sellerEpoch, rg.refreshAt = rg.ledger.Epoch, s.step+sellerRefresh
	}
	s.nextUser++
	buyer := strconv.FormatInt(s.nextUser, 36)
	s.stats.ReserveCalls++
	// The buyer number is unique across regions, as the sellers' ULIDs
	// are, so it serves as the reservation id too.
	res, out, err := rg.ledger.Reserve(rg.sellerEpoch, buyer, buyer, buyer, s.now, s.cfg.TTLMillis, 1)
	if err != nil {
		s.violate("reservation-id", "%s refused new reservation id %s: %v", rg.name, buyer, err)
		return
	}
	switch out {
	case quota.SoldOut:
		s.refuse(rg)
	case quota.StaleEpoch:
		rg.refreshAt = s.step // the seller re-reads its counters at once
		s.stats.StaleEpochs++
	case quota.Halted:
		s.stats.HaltedAnswers++
	}
	if out != quota.Reserved {
		return
	}
	if rg.lost {
		s.violate("lost-sale", "%s reserved %s while its store had lost writes and was not reconciled", rg.name, res.ID)
	}
	p := &purchase{id: res.ID, req: res.RequestID}
	rg.active = append(rg.active, p)
	rg.byReq[res.RequestID] = p
	rg.held++
	s.stats.Reservations++
}

// replayOrders brings a store that lost writes up to date with the order
// store for the reservations it still has: those the order store saw
// confirmed are confirmed, those it saw cancelled or expired are cancelled
// (their unit went back then), those erased since are counted as sold. It
// is the restore's path (quota.Ledger.RestoreEnded), not the buyers': it
// runs while the region is halted, when their confirms are refused.
func (s *Sim) replayOrders(rg *region) {
	l := rg.ledger
	for id, r := range l.Resv { // order does not matter: each call touches one reservation
		if r.State != quota.Active {
			continue
		}
		switch rg.byReq[r.RequestID].state {
		case pConfirmed, pErased:
			_ = l.RestoreEnded(id, quota.Confirmed)
		case pEnded:
			_ = l.RestoreEnded(id, quota.Cancelled)
		}
	}
}

// orderStoreSold is what the order store says the region must count as sold
// when its Redis lost writes: every unit a buyer holds that Redis does not
// show as an active reservation of that buyer. Raising Sold to it makes
// sold + reserved cover every unit buyers hold again.
//
// The order store is modelled as a perfect witness of every reservation a
// buyer was told about (DESIGN I4: reservations are durable before the
// answer); a real drain lags, which the real agent must wait out.
func (s *Sim) orderStoreSold(rg *region) int64 {
	n := rg.held
	for _, p := range rg.active { // after replayOrders
		if r := rg.ledger.Resv[p.id]; p.state == pActive && r != nil && r.RequestID == p.req && r.State == quota.Active {
			n--
		}
	}
	return n
}

// startBurst replaces the healed phase's even demand with the opening
// burst: one region gets 90% of the buyers.
func (s *Sim) startBurst() {
	hot := s.rng.IntN(len(s.regions))
	for i, rg := range s.regions {
		rg.rate = 0.5
		if i == hot {
			rg.rate = 9 * 0.5 * float64(len(s.regions)-1)
		}
	}
	s.tracef("burst: %s has 90%% of the buyers", s.regions[hot].name)
}

// refuse is what a buyer of a dry region is told, decided by quota.Refuse
// as the seller decides it (regional Sale.DryPhase), from what the region
// knows of the rest of the sale: the other regions' reports in etcd, which
// the agent copies into the region's Redis. The buyer is counted against the truth: "sold out"
// while some unit is neither sold nor reserved anywhere breaks DESIGN L1.
func (s *Sim) refuse(rg *region) {
	sold, reserved := rg.ledger.Sold, rg.ledger.Reserved
	for _, o := range s.regions {
		if o == rg {
			continue
		}
		if sr, ok := s.etcd.reports[o.name]; ok {
			sold += sr.rep.Sold
			reserved += sr.rep.Reserved
		}
	}
	answer := quota.Refuse(s.cfg.Total, sold, reserved)
	if s.cfg.Bug == BugDrySoldOut {
		answer = quota.SoldOutAll
	}
	switch answer {
	case quota.QuotaPending:
		s.stats.QuotaPending++
	case quota.AllReserved:
		s.stats.AllReserved++
	case quota.SoldOutAll:
		s.stats.SoldOutAnswers++
		var held int64
		for _, o := range s.regions {
			held += o.held
		}
		if held < s.cfg.Total {
			s.violate("L1-sold-out", "%s told a buyer sold out while buyers hold %d of %d units", rg.name, held, s.cfg.Total)
		}
	}
}
