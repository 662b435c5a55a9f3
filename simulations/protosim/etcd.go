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

type storedReport struct {
	rep    layout.RegionReport
	modRev int64
}

// keepRevs is how many revisions of history the fake etcd keeps for
// watchers; older ones are compacted, and a watcher that needs them must
// read everything again.
const keepRevs = 10

// change is one entry of etcd's history: a put of the allocation or of a
// region's report, at revision rev.
type change struct {
	rev    int64
	alloc  *quota.Allocation    // an allocation put (a clone; never changed)
	report *layout.RegionReport // a report put
	gone   string               // a report deleted (its agent's lease expired): the region
}

// etcd is the fake store: one revision counter, the leader key's create
// revision, each region's agent election key, the allocation document (one
// key) and one report key per region, with the history watchers read. Every
// write is a transaction comparing the writer's election revision, as
// concurrency.Election callers do (STYLE §5).
type etcd struct {
	rev        int64
	leaderRev  int64            // create revision of the current leader key
	agentRev   map[string]int64 // create revision of each region's agent key
	alloc      *quota.Allocation
	allocRev   int64
	reports    map[string]storedReport
	history    []change
	compactRev int64 // revisions up to this one are compacted
	noFence    bool  // BugNoFence
}

func newEtcd(a *quota.Allocation) *etcd {
	e := &etcd{alloc: a, agentRev: map[string]int64{}, reports: map[string]storedReport{}}
	e.rev++
	e.allocRev = e.rev
	e.history = append(e.history, change{rev: e.rev, alloc: a.Clone()})
	return e
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

// putAlloc writes the allocation if leaderRev is still the leader's and
// each report named in reportRevs (region -> mod revision) is unchanged:
// the compares of the acks it carries (quota.Round.AckedRevs).
//
// The report compare matters for acks: puts of one agent can land out of
// order, so an older report may overwrite the one an ack event came from.
// A region reconciling after lost writes raises its floor to the report etcd
// holds; an ack computed from a report etcd no longer holds could land after
// that read with a higher released_local, and the floor would be too low.
func (e *etcd) putAlloc(leaderRev int64, a *quota.Allocation, reportRevs map[string]int64) error {
	if leaderRev != e.leaderRev && !e.noFence {
		return errFenced
	}
	for r, rev := range reportRevs {
		if e.reports[r].modRev != rev {
			return errReportMoved
		}
	}
	e.rev++
	e.alloc = a.Clone()
	e.allocRev = e.rev
	e.record(change{rev: e.rev, alloc: e.alloc})
	return nil
}

// putReport writes a region's report if fence is the region's current
// agent term.
func (e *etcd) putReport(fence int64, rep layout.RegionReport) (int64, error) {
	if fence != e.agentRev[rep.Region] {
		return 0, errFenced
	}
	e.rev++
	e.reports[rep.Region] = storedReport{rep: rep, modRev: e.rev}
	r := rep
	e.record(change{rev: e.rev, report: &r})
	return e.rev, nil
}

// expireReport deletes region's report, as etcd does when the lease it is
// on expires; it answers the deletion's revision, or 0 if there was none.
func (e *etcd) expireReport(region string) int64 {
	if _, ok := e.reports[region]; !ok {
		return 0
	}
	e.rev++
	delete(e.reports, region)
	e.record(change{rev: e.rev, gone: region})
	return e.rev
}

func (e *etcd) record(c change) {
	e.history = append(e.history, c)
	if e.rev-e.compactRev > 2*keepRevs {
		e.compactRev = e.rev - keepRevs
		i := 0
		for i < len(e.history) && e.history[i].rev <= e.compactRev {
			i++
		}
		e.history = append(e.history[:0], e.history[i:]...)
	}
}

// since returns the changes from revision from on, or false if some of
// them were compacted.
func (e *etcd) since(from int64) ([]change, bool) {
	if from <= e.compactRev {
		return nil, false
	}
	i := len(e.history)
	for i > 0 && e.history[i-1].rev >= from {
		i--
	}
	return e.history[i:], true
}
