package protosim

import (
	"errors"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// agent is one region agent process. Each term starts by campaigning, which
// bumps the region's fence: the ledger refuses older fences and etcd refuses
// reports from older terms. A stale agent (lost its lease during a pause)
// keeps acting for a while and must be refused everywhere.
type agent struct {
	fence       int64
	alive       bool
	stale       bool
	stopAt      int
	syncing     bool  // waiting for the read that opens its term
	getID       int64 // the read it waits for
	getStep     int
	lastGet     int
	viewRev     int64  // newest allocation revision seen
	lastRelease string // last release id it executed, repeated in reports (the ack)
	// The release named by the newest report in etcd it has seen: that
	// release ran already, whatever Redis remembers.
	reportRev       int64
	reportReleaseID string
	needReport      bool
	lastReport      int
	reported        quota.Report // counters of its last report
}

const (
	reportEvery    = 20 // steps between reports while counters change
	heartbeat      = 50 // steps between reports when nothing changed
	lowReportEvery = 5  // steps between reports while stock is low and counters change
	resyncEvery    = 20 // steps between reads of etcd (a watch reconnect)
	getTimeout     = 10 // steps before a read is asked again
)

// current is the region's agent that holds the election, or nil.
func (rg *region) current() *agent {
	for _, a := range rg.agents {
		if a.alive && !a.stale {
			return a
		}
	}
	return nil
}

// startTerm campaigns for region (a new fence) with agent a, or with a new
// agent process when a is nil. Nothing can be elected while the region is cut
// off from etcd.
func (s *Sim) startTerm(rg *region, a *agent) {
	if s.net.cut[rg.name] {
		return
	}
	if a == nil {
		a = &agent{alive: true}
		if old := rg.current(); old != nil {
			old.stale = true
			old.stopAt = s.step + 5 + s.rng.IntN(25)
			s.tracef("%s agent term %d goes stale", rg.name, old.fence)
		}
		rg.agents = append(rg.agents, a)
	}
	a.fence = s.etcd.campaignAgent(rg.name)
	a.syncing = true
	a.lastRelease = ""
	s.stats.AgentTerms++
	s.tracef("%s agent term %d starts", rg.name, a.fence)
	s.sendGet(rg, a)
}

func (s *Sim) sendGet(rg *region, a *agent) {
	s.nextGet++
	a.getID, a.getStep, a.lastGet = s.nextGet, s.step, s.step
	s.net.send(int64(s.step), msg{kind: mGet, region: rg.name, getID: a.getID, fence: a.fence})
}

func (s *Sim) agentTick(rg *region, a *agent) {
	if !a.alive {
		return
	}
	if a.stale {
		if s.step >= a.stopAt {
			a.alive = false
			return
		}
		if s.step-a.lastReport >= reportEvery {
			s.sendReport(rg, a) // etcd must refuse it: the stale agent's term is over
		}
		return
	}
	if a.syncing {
		if s.step-a.getStep >= getTimeout {
			s.sendGet(rg, a)
		}
		return
	}
	if rg.epoch != rg.sellerEpoch {
		// Redis changed primary: it may have lost writes. A new term
		// fences off reports still in flight from before, then reconciles.
		s.tracef("%s agent term %d sees a new Redis primary", rg.name, a.fence)
		s.startTerm(rg, a)
		return
	}
	if s.step-a.lastGet >= resyncEvery {
		s.sendGet(rg, a)
	}
	since := s.step - a.lastReport
	// Running out: the leader should hear soon (the real agent reports at once).
	low := s.etcd.alloc.PolicyOf().Low(rg.ledger.Available(), rg.demand*1000/float64(s.cfg.StepMillis), s.cfg.Total)
	if a.needReport || since >= heartbeat || s.changed(rg, a) && (since >= reportEvery || low && since >= lowReportEvery) {
		s.sendReport(rg, a)
	}
}

func (s *Sim) changed(rg *region, a *agent) bool {
	l, r := rg.ledger, a.reported
	return l.Sold != r.Sold || l.Reserved != r.Reserved || l.ReleasedLocal != r.ReleasedLocal || l.GrantedSeen != r.GrantedSeen
}

func (s *Sim) sendReport(rg *region, a *agent) {
	l := rg.ledger
	rep := layout.RegionReport{
		Report: quota.Report{
			Sold: l.Sold, Reserved: l.Reserved, ReleasedLocal: l.ReleasedLocal, GrantedSeen: l.GrantedSeen,
			Demand: rg.demand * 1000 / float64(s.cfg.StepMillis), At: s.now,
		},
		Region: rg.name, Sale: saleID, ReleaseID: a.lastRelease, Fence: a.fence, Halted: l.Halted,
	}
	a.needReport, a.lastReport, a.reported = false, s.step, rep.Report
	s.net.send(int64(s.step), msg{kind: mReport, region: rg.name, report: rep})
}

// onView handles a watch event or a read answer about the region.
func (s *Sim) onView(rg *region, a *agent, v view) {
	if !a.alive {
		return
	}
	if a.syncing {
		if v.GetID == 0 || v.GetID != a.getID || v.Fence != a.fence {
			return // the term's own read decides; it covers everything older
		}
		a.syncing = false
		if !s.reconcile(rg, a, v) {
			return
		}
	}
	if rg.epoch != rg.sellerEpoch {
		// Redis changed primary and may have lost writes: the scripts
		// refuse the old epoch until this agent reconciles. A release
		// computed on lost counters could give up units already sold.
		return
	}
	l := rg.ledger
	if v.Granted > l.GrantedSeen && s.crashPoint("agent-before-apply-grant") {
		s.crashAgent(rg, a)
		return
	}
	if !s.applyGrant(rg, a, v) {
		return
	}
	if !a.stale && (l.ReleasedLocal < max(v.Released, v.Report.ReleasedLocal) || l.Sold < v.Report.Sold) {
		// Redis shows less than etcd already knows: it lost writes.
		s.tracef("%s agent term %d: counters below etcd (released_local %d < %d or sold %d < %d)",
			rg.name, a.fence, l.ReleasedLocal, max(v.Released, v.Report.ReleasedLocal), l.Sold, v.Report.Sold)
		s.startTerm(rg, a)
		return
	}
	if v.ReportRev > a.reportRev {
		a.reportRev, a.reportReleaseID = v.ReportRev, v.ReportReleaseID
	}
	if v.Rev < a.viewRev {
		return // an old event: its grant was max-merged, its release is history
	}
	a.viewRev = v.Rev
	if p := v.Pending; p != nil && p.ID == a.reportReleaseID {
		// It ran already (maybe in a store that lost the record since): the
		// report etcd holds counts it, and the floor covers that. Running it
		// again would give up more units than asked, stranded until the next
		// release. Acknowledge it.
		if a.lastRelease != p.ID {
			a.lastRelease = p.ID
			a.needReport = true
		}
	} else if p != nil {
		m, rl, err := l.Release(a.fence, l.Epoch, p.ID, p.Units, p.Keep)
		if err != nil {
			s.refused(rg, a, "release", err)
			return
		}
		if s.crashPoint("agent-after-release-before-ack") {
			s.crashAgent(rg, a)
			return
		}
		if a.lastRelease != p.ID {
			s.tracef("%s agent term %d released %d of %d for %s (released_local %d)", rg.name, a.fence, m, p.Units, p.ID, rl)
			a.lastRelease = p.ID
			a.needReport = true
		}
	}
}

// applyGrant max-merges the cumulative grant into Redis (or, with
// BugNoMaxMerge, applies the event as it comes). It returns false if the
// agent was refused.
func (s *Sim) applyGrant(rg *region, a *agent, v view) bool {
	l := rg.ledger
	if s.cfg.Bug == BugNoMaxMerge {
		if _, err := l.ApplyGrant(a.fence, 0); err != nil { // the fence check alone
			s.refused(rg, a, "grant", err)
			return false
		}
		if v.GetID != 0 {
			l.GrantedSeen = v.Granted
		} else {
			l.GrantedSeen += v.Delta
		}
		return true
	}
	if _, err := l.ApplyGrant(a.fence, v.Granted); err != nil {
		s.refused(rg, a, "grant", err)
		return false
	}
	return true
}

// reconcile runs on the read that opens a term. If Redis shows less than etcd
// or the order store know, or is halted, or changed primary, it halts the
// region, raises the floors and resumes selling. It returns false if the
// agent crashed meanwhile (Redis stays halted: the next term finds it so).
func (s *Sim) reconcile(rg *region, a *agent, v view) bool {
	l := rg.ledger
	floorReleased := max(v.Released, v.Report.ReleasedLocal)
	floorSold := max(v.Report.Sold, s.orderStoreSold(rg))
	below := l.ReleasedLocal < floorReleased || l.Sold < floorSold
	if !below && !l.Halted && rg.epoch == rg.sellerEpoch {
		a.needReport = true
		return true
	}
	s.stats.Reconciles++
	if below {
		s.stats.LostDetected++
	}
	s.tracef("%s agent term %d reconciles: released_local %d -> %d, sold %d -> %d", rg.name, a.fence,
		l.ReleasedLocal, max(l.ReleasedLocal, floorReleased), l.Sold, max(l.Sold, floorSold))
	if err := l.SetHalted(a.fence, true); err != nil {
		s.refused(rg, a, "halt", err)
		return false
	}
	if s.crashPoint("agent-mid-reconcile") {
		s.crashAgent(rg, a)
		return false
	}
	if s.cfg.Bug != BugNoReconcile {
		s.replayOrders(rg)
		floorSold = max(v.Report.Sold, s.orderStoreSold(rg))
		if err := l.RaiseFloor(a.fence, floorReleased, floorSold); err != nil {
			s.refused(rg, a, "raise floor", err)
			return false
		}
	}
	if err := l.SetHalted(a.fence, false); err != nil {
		s.refused(rg, a, "resume", err)
		return false
	}
	// The sellers may use the new primary now.
	rg.sellerEpoch = rg.epoch
	rg.lost = false
	a.needReport = true
	return true
}

func (s *Sim) refused(rg *region, a *agent, what string, err error) {
	if errors.Is(err, quota.ErrStaleFence) {
		s.stats.StaleRefused++
	}
	s.tracef("%s agent term %d: %s refused: %v", rg.name, a.fence, what, err)
}

func (s *Sim) crashAgent(rg *region, a *agent) {
	a.alive = false
	s.stats.AgentCrashes++
	rg.agentDownUntil = s.step + 5 + s.rng.IntN(25)
	s.tracef("%s agent term %d crashes", rg.name, a.fence)
}
