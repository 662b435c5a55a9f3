package protosim

import (
	"errors"
	"maps"

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
}

const (
	planEvery   = 5  // steps between planning rounds
	relistEvery = 25 // steps between re-reads of the reports (a watch reconnect)
)

func (s *Sim) electLeader() {
	s.nextCoord++
	c := &coordinator{
		id:      s.nextCoord,
		fence:   s.etcd.campaign(),
		alive:   true,
		alloc:   s.etcd.alloc.Clone(),
		reports: maps.Clone(s.etcd.reports),
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

func (s *Sim) onReportEvent(c *coordinator, sr storedReport) {
	if !c.alive {
		return
	}
	if cur, ok := c.reports[sr.rep.Region]; ok && cur.modRev >= sr.modRev {
		return // a stale or repeated watch event
	}
	c.reports[sr.rep.Region] = sr
}

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
	}
	if !s.coordAcks(c) {
		return
	}
	if (s.step+c.id)%planEvery == 0 {
		s.coordPlan(c)
	}
}

// coordAcks tells quota.Step each region's latest report that names its
// pending release, and writes the acks. It returns false if the coordinator
// crashed.
func (s *Sim) coordAcks(c *coordinator) bool {
	for _, rg := range s.regions { // sorted by name, as RegionNames would be
		name := rg.name
		r := c.alloc.Regions[name]
		sr, ok := c.reports[name]
		if r.Pending == nil || !ok || sr.rep.ReleaseID != r.Pending.ID {
			continue
		}
		next := c.alloc.Clone()
		acts, err := next.Step(quota.RegionReported{Region: name, Report: sr.rep.Report, ReleaseID: sr.rep.ReleaseID})
		if err != nil {
			s.tracef("c%d ack %s from %s refused: %v", c.id, r.Pending.ID, name, err)
			continue
		}
		if s.crashPoint("leader-before-ack-write", 0.05) {
			s.crashLeader(c)
			return false
		}
		cond := &reportCond{region: name, modRev: sr.modRev}
		if s.cfg.Bug == BugAckNoReportRevision {
			cond = nil
		}
		err = s.writeAlloc(c, next, cond)
		if errors.Is(err, errReportMoved) {
			s.stats.AckReportMoved++
			// Read the report etcd holds now; a later round acks from it.
			c.reports[name] = s.etcd.reports[name]
			continue
		}
		if err == nil {
			// The ack stands on a report etcd holds: an agent reconciling
			// after lost writes takes that report as its floor.
			if held := s.etcd.reports[name].rep; held.ReleaseID != r.Pending.ID || held.ReleasedLocal < next.Regions[name].Released {
				s.violate("I2-ack", "%s: ack of %s to released %d landed while etcd held its report of release %q, released_local %d",
					name, r.Pending.ID, next.Regions[name].Released, held.ReleaseID, held.ReleasedLocal)
			}
			s.stats.Acks++
			s.stats.Grants += int64(len(acts.Grants))
			s.tracef("c%d ack %s from %s released_local=%d grants=%v", c.id, sr.rep.ReleaseID, name, sr.rep.ReleasedLocal, acts.Grants)
		}
	}
	return true
}

// coordPlan decides with quota.Decide, as the real coordinator's loop
// does, on the leader's copy with the latest reports. The sale opens at
// step 0 and has no end.
func (s *Sim) coordPlan(c *coordinator) {
	next := c.alloc.Clone()
	for _, rg := range s.regions {
		if sr, ok := c.reports[rg.name]; ok {
			rep := sr.rep.Report
			next.Regions[rg.name].Report = &rep
		}
	}
	var acts quota.Actions
	plan, _, err := next.Decide(quota.Situation{Now: s.now})
	if err == nil {
		acts, err = next.Apply(plan)
	}
	if err != nil {
		s.tracef("c%d plan refused: %v", c.id, err)
		return
	}
	if len(acts.Grants) == 0 && len(acts.Releases) == 0 {
		return
	}
	if s.cfg.Bug == BugGrantBeforeAck {
		// The mistake: count the units as released before the region's
		// Redis has given them up; the next round regrants them.
		for _, req := range acts.Releases {
			next.Regions[req.Region].Released += req.Units
		}
	}
	if s.writeAlloc(c, next, nil) != nil {
		return
	}
	s.stats.Grants += int64(len(acts.Grants))
	s.stats.Moves += int64(len(acts.Releases))
	s.tracef("c%d grants %v releases %v", c.id, acts.Grants, acts.Releases)
	if len(acts.Releases) > 0 && s.crashPoint("leader-after-release-request", 0.05) {
		s.crashLeader(c)
	}
}

// writeAlloc is the leader's fenced transaction; on success etcd's watch
// sends every region the new state.
func (s *Sim) writeAlloc(c *coordinator, next *quota.Allocation, cond *reportCond) error {
	if err := s.etcd.putAlloc(c.fence, next, cond); err != nil {
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
