package protosim

import (
	"errors"
	"maps"
	"slices"

	"flashsale/quota"
)

// coordinator is one coordinator process. Only the one holding the current
// leader key can write; a deposed one keeps running on its stale cache for a
// while (a GC pause, a partition from etcd's leader) and keeps trying to
// write, which the fence must refuse.
type coordinator struct {
	id      int
	fence   int64 // create revision of its leader key
	alive   bool
	deposed bool
	stopAt  int // a deposed coordinator notices it lost its lease at this step
	// alloc is its copy of the allocation: the leader is the only writer,
	// so it never re-reads it while it believes it leads.
	alloc   *quota.Allocation
	reports map[string]storedReport
	dirty   bool // a report came since its last round
	// goneRev is the revision at which each region's report was deleted
	// (its agent's lease expired): an older put event is stale.
	goneRev map[string]int64
	// learning until quota.Learned: every region reported since the
	// election (at revision fence, at time since), or learningGraceMs.
	learning bool
	since    int64
}

const (
	learningGraceMs = 1000 // coordinator.DevConfig's LearningGrace
	planEvery       = 5    // steps between planning rounds
	relistEvery     = 25   // steps between re-reads of the reports (a watch reconnect)
)

func (s *Sim) electLeader() {
	s.nextCoord++
	c := &coordinator{
		id:       s.nextCoord,
		fence:    s.etcd.campaign(),
		alive:    true,
		alloc:    s.etcd.alloc.Clone(),
		reports:  maps.Clone(s.etcd.reports),
		goneRev:  map[string]int64{},
		learning: true,
		since:    s.now,
	}
	s.coords = append(s.coords, c)
	s.tracef("leader c%d elected (fence %d)", c.id, c.fence)
}

// leader is the live coordinator holding the leader key, or nil.
func (s *Sim) leader() *coordinator {
	for _, c := range s.coords {
		if c.alive && !c.deposed {
			return c
		}
	}
	return nil
}

func (s *Sim) onReportEvent(c *coordinator, sr storedReport, gone bool) {
	if !c.alive {
		return
	}
	region := sr.rep.Region
	if cur, ok := c.reports[region]; ok && cur.modRev >= sr.modRev || sr.modRev <= c.goneRev[region] {
		return // a stale or repeated watch event
	}
	if gone {
		delete(c.reports, region)
		c.goneRev[region] = sr.modRev
	} else {
		c.reports[region] = sr
	}
	c.dirty = true
}

// coordTick runs the leader's loop as coordinator/loop.go does: a round
// at once on a report, and every planEvery steps.
func (s *Sim) coordTick(c *coordinator) {
	if !c.alive {
		return
	}
	if c.deposed && s.step >= c.stopAt {
		c.alive = false
		s.tracef("c%d notices it was deposed and stops", c.id)
		return
	}
	if (s.step+c.id)%relistEvery == 0 {
		c.reports = maps.Clone(s.etcd.reports)
		for _, rg := range s.regions {
			if _, ok := c.reports[rg.name]; !ok {
				c.goneRev[rg.name] = s.etcd.rev // no report as of this read
			}
		}
	}
	if c.dirty || (s.step+c.id)%planEvery == 0 {
		c.dirty = false
		s.coordRound(c)
	}
}

// coordRound is the real leader's round, quota.Round, on the leader's copy
// of the allocation with the reports it heard, written as
// coordinator.stepSale writes it: fenced, comparing the reports the acks
// came from. The sale opens at step 0 and has no end.
func (s *Sim) coordRound(c *coordinator) {
	reps := make(map[string]quota.StoredReport, len(c.reports))
	for r, sr := range c.reports {
		reps[r] = quota.StoredReport{Report: sr.rep.Report, ReleaseID: sr.rep.ReleaseID, Rev: sr.modRev}
	}
	if c.learning {
		revs := make(map[string]int64, len(c.reports))
		for r, sr := range c.reports {
			revs[r] = sr.modRev
		}
		if quota.Learned(s.now, c.since, learningGraceMs, c.fence, slices.Sorted(maps.Keys(c.reports)), revs) {
			c.learning = false
			s.tracef("c%d: learning mode over", c.id)
		}
	}
	next := c.alloc.Clone()
	// As coordinator.situation: a region without a report key has no
	// lease, so the planners leave it alone.
	live := make(map[string]bool, len(c.reports))
	for r := range c.reports {
		live[r] = true
	}
	rd, err := next.Round(c.alloc, reps, quota.Situation{Now: s.now, Learning: c.learning, Live: live},
		quota.RoundBugs{AckWithoutReportRevision: s.cfg.Bug == BugAckNoReportRevision, GrantBeforeAck: s.cfg.Bug == BugGrantBeforeAck})
	for _, e := range rd.Refused {
		s.tracef("c%d refused a report: %v", c.id, e)
	}
	if err != nil {
		s.tracef("c%d round refused: %v", c.id, err)
		return
	}
	if !rd.Changed {
		return
	}
	acked := ackedReleases(c.alloc, next)
	if len(acked) > 0 && s.crashPoint("leader-before-ack-write", 0.05) {
		s.crashLeader(c)
		return
	}
	err = s.writeAlloc(c, next, rd.AckedRevs)
	if errors.Is(err, errReportMoved) {
		s.stats.AckReportMoved++
		// Read the reports etcd holds now; a later round acks from them.
		for r := range rd.AckedRevs {
			c.reports[r] = s.etcd.reports[r]
		}
		return
	}
	if err != nil {
		return
	}
	for _, r := range slices.Sorted(maps.Keys(acked)) {
		// The ack stands on a report etcd holds: an agent reconciling
		// after lost writes takes that report as its floor.
		id := acked[r]
		if held := s.etcd.reports[r].rep; held.ReleaseID != id || held.ReleasedLocal < next.Regions[r].Released {
			s.violate("I2-ack", "%s: ack of %s to released %d landed while etcd held its report of release %q, released_local %d",
				r, id, next.Regions[r].Released, held.ReleaseID, held.ReleasedLocal)
		}
	}
	s.stats.Acks += int64(len(acked))
	s.stats.Grants += int64(len(rd.Actions.Grants))
	s.stats.Moves += int64(len(rd.Actions.Releases))
	s.tracef("c%d writes: %s; grants %v releases %v", c.id, rd.Note, rd.Actions.Grants, rd.Actions.Releases)
	if len(rd.Actions.Releases) > 0 && s.crashPoint("leader-after-release-request", 0.05) {
		s.crashLeader(c)
	}
}

// ackedReleases names, per region, the pending release of before that
// after no longer holds pending: acknowledged.
func ackedReleases(before, after *quota.Allocation) map[string]string {
	out := map[string]string{}
	for r, ra := range before.Regions {
		if p := ra.Pending; p != nil && (after.Regions[r].Pending == nil || after.Regions[r].Pending.ID != p.ID) {
			out[r] = p.ID
		}
	}
	return out
}

// writeAlloc is the leader's fenced transaction; on success etcd's watch
// sends every region the new state.
func (s *Sim) writeAlloc(c *coordinator, next *quota.Allocation, reportRevs map[string]int64) error {
	if err := s.etcd.putAlloc(c.fence, next, reportRevs); err != nil {
		if errors.Is(err, errFenced) {
			s.stats.FencedWrites++
			s.tracef("c%d write refused: %v", c.id, err)
		}
		return err
	}
	if c.deposed {
		s.violate("I5", "etcd accepted an allocation write of c%d, which lost its election", c.id)
	}
	s.stats.AllocWrites++
	c.alloc = next
	return nil
}

func (s *Sim) crashLeader(c *coordinator) {
	c.alive = false
	s.stats.LeaderCrashes++
	s.leaderDownUntil = s.step + 3 + s.rng.IntN(15)
	s.tracef("c%d crashes", c.id)
}
