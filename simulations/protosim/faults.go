package protosim

import (
	"maps"
	"slices"
	"strconv"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// Fault rates per step during the main phase.
const (
	pLeaderChange = 0.01
	pLeaderCrash  = 0.004
	pAgentCrash   = 0.004
	pAgentStale   = 0.003
	pPartition    = 0.003
)

// scheduleFailovers picks up to two steps at which region's store loses its
// last writes, each restoring the latest snapshot, taken 1-40 steps before
// for it (possibly before an earlier failover; when none was taken yet, an
// empty store: a restart without AOF). Snapshots are taken only when
// needed, so seeds stay cheap.
func (s *Sim) scheduleFailovers(rg *region) {
	if s.cfg.MainSteps < 40 {
		return
	}
	for range s.rng.IntN(3) {
		at := 20 + s.rng.IntN(s.cfg.MainSteps-20)
		rg.failAt = append(rg.failAt, at)
		rg.snapAt = append(rg.snapAt, at-1-s.rng.IntN(40))
	}
}

func (s *Sim) faults() {
	if !s.heal {
		if c := s.leader(); c != nil {
			switch {
			case s.rng.Float64() < pLeaderChange:
				// Its lease expired but it has not noticed yet.
				c.deposed = true
				c.stopAt = s.step + 10 + s.rng.IntN(40)
				s.stats.LeaderChanges++
				s.tracef("c%d is deposed but keeps running until step %d", c.id, c.stopAt)
				s.electLeader()
			case s.rng.Float64() < pLeaderCrash:
				s.crashLeader(c)
			}
		}
	}
	if s.leader() == nil && s.step >= s.leaderDownUntil {
		s.electLeader()
	}
	for _, rg := range s.regions {
		s.regionFaults(rg)
	}
}

// leaseSteps is how long an agent's lease outlives the agent (or its
// link to etcd): then the report key on it is deleted.
const leaseSteps = 30

// leases deletes the report of a region no agent has held a lease of for
// leaseSteps, as etcd does when the lease expires; the leaders' planners
// then leave the region alone (quota.Situation.Live).
func (s *Sim) leases(rg *region) {
	if rg.current() != nil && !s.net.cut[rg.name] {
		rg.leaseless = false
		return
	}
	if !rg.leaseless {
		rg.leaseless, rg.leaselessAt = true, s.step
	}
	if s.step-rg.leaselessAt < leaseSteps {
		return
	}
	rev := s.etcd.expireReport(rg.name)
	if rev == 0 {
		return
	}
	s.stats.ExpiredReports++
	s.tracef("%s: its agent's lease expired; etcd deletes its report", rg.name)
	for _, c := range s.coords {
		if c.alive {
			// The leaders' watch does not cross the region's partition.
			s.net.send(int64(s.step), msg{kind: mReportEvent, coord: c.id, report: layout.RegionReport{Region: rg.name}, modRev: rev, gone: true})
		}
	}
}

func (s *Sim) regionFaults(rg *region) {
	s.leases(rg)
	if s.net.cut[rg.name] && s.step >= rg.cutUntil {
		delete(s.net.cut, rg.name)
		s.tracef("%s reconnects", rg.name)
		if a := rg.current(); a != nil {
			s.startTerm(rg, a) // its lease expired while cut off
		}
	}
	if !s.heal {
		if !s.net.cut[rg.name] && s.rng.Float64() < pPartition {
			s.net.cut[rg.name] = true
			rg.cutUntil = s.step + 20 + s.rng.IntN(60)
			s.stats.Partitions++
			s.tracef("%s is cut off until step %d", rg.name, rg.cutUntil)
		}
		if slices.Contains(rg.snapAt, s.step) {
			rg.snapshot = cloneLedger(rg.ledger)
		}
		if slices.Contains(rg.failAt, s.step) {
			s.failover(rg)
		}
	}
	a := rg.current()
	switch {
	case a == nil:
		if s.step >= rg.agentDownUntil {
			s.startTerm(rg, nil)
		}
	case s.heal:
	case s.rng.Float64() < pAgentCrash:
		s.crashAgent(rg, a)
	case s.rng.Float64() < pAgentStale:
		s.startTerm(rg, nil) // a new process wins; a goes stale
	}
}

// failover replaces the region's store by a replica that missed its last
// writes. Being another primary, it sells nothing until the agent
// reconciled it (quota.Ledger.Stopped).
func (s *Sim) failover(rg *region) {
	if rg.snapshot == nil {
		rg.ledger = quota.NewLedger()
	} else {
		rg.ledger = cloneLedger(rg.snapshot)
	}
	s.newPrimary(rg)
	rg.lost = true
	s.stats.Failovers++
	l := rg.ledger
	s.tracef("%s Redis fails over and loses writes: granted_seen %d released_local %d sold %d reserved %d",
		rg.name, l.GrantedSeen, l.ReleasedLocal, l.Sold, l.Reserved)
}

// startHeal ends every fault: the network delivers everything, partitions
// end, and crashed processes come back as their timers run out.
func (s *Sim) startHeal() {
	s.heal = true
	wasCut := maps.Clone(s.net.cut)
	s.net.heal()
	s.tracef("network healed; no more faults")
	for _, rg := range s.regions {
		if a := rg.current(); a != nil && wasCut[rg.name] {
			s.startTerm(rg, a) // its lease expired while cut off
		}
		rg.rate = healRate
	}
}

// newPrimary makes the region's ledger a new Redis primary, as a promoted
// replica or a restarted server gets a new replication id.
func (s *Sim) newPrimary(rg *region) {
	rg.primaries++
	rg.ledger.Primary = rg.name + "-" + strconv.Itoa(rg.primaries)
	rg.ledger.Bugs = s.ledgerBugs()
}

func (s *Sim) ledgerBugs() quota.LedgerBugs {
	b := s.cfg.Bug
	return quota.LedgerBugs{
		ReserveIgnoresHalted: b == BugReserveIgnoresHalted,
		GrantSkipsFence:      b == BugGrantSkipsFence,
		ConfirmExpired:       b == BugConfirmExpired,
		ReleaseAnswersBefore: b == BugReleaseAnswersBefore,
	}
}
