package protosim

import (
	"errors"

	"flashsale/quota"
	"flashsale/quota/layout"
)

var (
	// errFenced is a failed compare: the writer is no longer leader (or agent).
	errFenced = errors.New("fenced: compare on election revision failed")
	// errReportMoved is a failed compare on a report's mod revision: the
	// report an ack was computed from is no longer the one etcd holds.
	errReportMoved = errors.New("report changed since it was read")
)

// reportCond makes an allocation write conditional on a region's report
// still being the one at modRev.
type reportCond struct {
	region string
	modRev int64
}

type storedReport struct {
	rep    layout.RegionReport
	modRev int64
}

// etcd is the fake store: one revision counter, the leader key's create
// revision, the allocation document (one key) and one report key per region.
// Every write is a transaction comparing the writer's election revision, as
// concurrency.Election callers do (STYLE §5).
type etcd struct {
	rev       int64
	leaderRev int64            // create revision of the current leader key
	agentRev  map[string]int64 // create revision of each region's agent key
	alloc     *quota.Allocation
	allocRev  int64
	reports   map[string]storedReport
	noFence   bool // BugNoFence
}

func newEtcd(a *quota.Allocation) *etcd {
	return &etcd{alloc: a, agentRev: map[string]int64{}, reports: map[string]storedReport{}}
}

// campaign makes a new leader key and returns its create revision.
func (e *etcd) campaign() int64 {
	e.rev++
	e.leaderRev = e.rev
	return e.rev
}

// campaignAgent makes a new agent key for region: the new agent term's fence.
func (e *etcd) campaignAgent(region string) int64 {
	e.rev++
	e.agentRev[region] = e.rev
	return e.rev
}

// putAlloc writes the allocation if leaderRev is still the leader's and, when
// cond is set, the report it names is unchanged.
//
// The report compare matters for acks: puts of one agent can land out of
// order, so an older report may overwrite the one an ack event came from.
// A region reconciling after lost writes raises its floor to the report etcd
// holds; an ack computed from a report etcd no longer holds could land after
// that read with a higher released_local, and the floor would be too low.
// (Switching the compare off did not break an invariant in 10,000 seeds: the
// window is narrow. It stays because the argument above needs it.)
func (e *etcd) putAlloc(leaderRev int64, a *quota.Allocation, cond *reportCond) error {
	if leaderRev != e.leaderRev && !e.noFence {
		return errFenced
	}
	if cond != nil && e.reports[cond.region].modRev != cond.modRev {
		return errReportMoved
	}
	e.rev++
	e.alloc = a.Clone()
	e.allocRev = e.rev
	return nil
}

// putReport writes a region's report if its fence is the region's current
// agent term.
func (e *etcd) putReport(rep layout.RegionReport) (int64, error) {
	if rep.Fence != e.agentRev[rep.Region] {
		return 0, errFenced
	}
	e.rev++
	e.reports[rep.Region] = storedReport{rep: rep, modRev: e.rev}
	return e.rev, nil
}

// view reads what region's agent needs: its counters, its pending release
// and its last report.
func (e *etcd) view(region string) view {
	sr := e.reports[region]
	v := view{Rev: e.allocRev, Report: sr.rep.Report, ReportReleaseID: sr.rep.ReleaseID, ReportRev: sr.modRev}
	if r := e.alloc.Regions[region]; r != nil {
		v.Granted, v.Released = r.Granted, r.Released
		if r.Pending != nil && r.Pending.Region == region {
			p := *r.Pending
			v.Pending = &p
		}
	}
	return v
}
