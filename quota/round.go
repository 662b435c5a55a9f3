package quota

import (
	"reflect"
	"strconv"
)

// StoredReport is a region's report as the leader read it, with the
// revision of the store holding it (etcd's mod revision of the report
// key). An ack taken from it is written only while that report is still
// the one stored: puts of one agent can land out of order (a retried
// write), so an older report may overwrite the one an ack came from, and
// an agent reconciling after lost writes takes the stored report as its
// floor (DESIGN §4.1).
type StoredReport struct {
	Report    Report
	ReleaseID string
	Rev       int64
}

// RoundBugs switch off one defence of the leader's round each, so the
// simulation can show its checker catches the mistake. Never set outside
// simulations/protosim.
type RoundBugs struct {
	// AckWithoutReportRevision takes acks without asking the write to
	// compare the revision of the report they came from.
	AckWithoutReportRevision bool
	// GrantBeforeAck counts a release as done the moment it is requested,
	// before the region's Redis gave the units up: the next round grants
	// them elsewhere while the giver can still sell them.
	GrantBeforeAck bool
}

// Round is what one leader round did to an allocation: the actions of
// the acks it took and of the plan it applied, and what its write must
// compare.
type Round struct {
	Actions Actions
	// Note names the acks and the planner, for the log.
	Note string
	// AckedRevs maps each region whose report acknowledged a release to
	// that report's revision: the write compares each (a failed compare
	// is a conflict: read again, decide again).
	AckedRevs map[string]int64
	// Refused are reports Step refused (an agent's malformed ack); the
	// release stays pending and the round goes on.
	Refused []error
	// Changed says the counters changed: the allocation must be written.
	// Report-only changes are not, which keeps the leader's writes
	// proportional to quota movement, not to the report rate.
	Changed bool
}

// TakeReports feeds each region's report, in region name order, to a
// (Step keeps the newest and applies an ack naming the pending release).
// It changes a; the caller works on a clone of what the store holds.
func (a *Allocation) TakeReports(reps map[string]StoredReport, bugs RoundBugs) Round {
	var rd Round
	for _, r := range a.RegionNames() {
		rep, ok := reps[r]
		if !ok {
			continue
		}
		pending := a.Regions[r].Pending
		acts, err := a.Step(RegionReported{Region: r, Report: rep.Report, ReleaseID: rep.ReleaseID})
		if err != nil {
			rd.Refused = append(rd.Refused, errorf("report of %s naming release %s: %w", r, rep.ReleaseID, err))
			continue
		}
		if pending != nil && a.Regions[r].Pending == nil {
			rd.note("ack " + pending.ID + " (released_local " + strconv.FormatInt(rep.Report.ReleasedLocal, 10) + ")")
			if !bugs.AckWithoutReportRevision {
				if rd.AckedRevs == nil {
					rd.AckedRevs = map[string]int64{}
				}
				rd.AckedRevs[r] = rep.Rev
			}
		}
		rd.add(acts)
	}
	return rd
}

// Round is the leader's round for one sale, the one the coordinator's
// loop and the simulation both run: take the reports (and the acks they
// carry), then whatever Decide plans for s, applied. It changes a, which
// must be a clone of before, the allocation as stored; Changed compares
// the two.
func (a *Allocation) Round(before *Allocation, reps map[string]StoredReport, s Situation, bugs RoundBugs) (Round, error) {
	rd := a.TakeReports(reps, bugs)
	plan, note, err := a.Decide(s)
	if err != nil {
		return rd, errorf("plan sale %s: %w", a.Sale, err)
	}
	if !plan.Empty() {
		acts, err := a.Apply(plan)
		if err != nil {
			return rd, errorf("apply plan to sale %s: %w", a.Sale, err)
		}
		rd.add(acts)
		rd.note(note)
		if bugs.GrantBeforeAck {
			for _, req := range acts.Releases {
				a.Regions[req.Region].Released += req.Units
			}
		}
	}
	rd.Changed = !SameCounters(before, a)
	return rd, nil
}

func (rd *Round) add(acts Actions) {
	rd.Actions.Grants = append(rd.Actions.Grants, acts.Grants...)
	rd.Actions.Releases = append(rd.Actions.Releases, acts.Releases...)
}

func (rd *Round) note(n string) {
	if n == "" {
		return
	}
	if rd.Note != "" {
		rd.Note += "; "
	}
	rd.Note += n
}

// SameCounters says whether a and b agree on everything but the regions'
// reports: what a write of one over the other would change. It runs on
// every round, so it compares in place (TestSameCountersSeesEveryField
// keeps it in step with the types).
func SameCounters(a, b *Allocation) bool {
	if a.Sale != b.Sale || a.Total != b.Total || a.NextRelease != b.NextRelease ||
		len(a.Regions) != len(b.Regions) || !reflect.DeepEqual(a.Policy, b.Policy) {
		return false
	}
	for n, ra := range a.Regions {
		rb, ok := b.Regions[n]
		if !ok || ra.Granted != rb.Granted || ra.Released != rb.Released || ra.Weight != rb.Weight ||
			ra.Min != rb.Min || ra.Max != rb.Max || (ra.Pending == nil) != (rb.Pending == nil) ||
			ra.Pending != nil && *ra.Pending != *rb.Pending {
			return false
		}
	}
	return true
}
