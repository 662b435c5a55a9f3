package quota

// Event is a fact told to Step: RegionReported, ReleaseAcked or Tick.
type Event interface{ isEvent() }

// RegionReported is a region agent's report. A report naming the region's
// pending release in ReleaseID acknowledges it with Report.ReleasedLocal;
// agents repeat the id of the last release they ran, so a report naming
// any other id is only a report.
type RegionReported struct {
	Region    string
	Report    Report
	ReleaseID string
}

// ReleaseAcked is an explicit acknowledgement of release ID with the
// region's cumulative released_local.
type ReleaseAcked struct {
	Region        string
	ID            string
	ReleasedLocal int64
}

// Tick is the passing of time (unix ms): the moment to rebalance.
type Tick struct{ Now int64 }

func (RegionReported) isEvent() {}
func (ReleaseAcked) isEvent()   {}
func (Tick) isEvent()           {}

// Step applies one fact and returns what the caller must now do. Grants
// made elsewhere after a release happen only in AckRelease, and every grant
// goes through Grant, which keeps the sum of net grants within the total.
// A Tick rebalances with the allocation's Policy (DefaultPolicy when nil).
// A duplicate or stale ReleaseAcked answers ErrNotPending and changes
// nothing.
func (a *Allocation) Step(ev Event) (Actions, error) {
	switch e := ev.(type) {
	case RegionReported:
		r, ok := a.Regions[e.Region]
		if !ok {
			return Actions{}, errorf("report from %s: %w", e.Region, ErrUnknownRgn)
		}
		if r.Report == nil || e.Report.At >= r.Report.At { // reports may arrive out of order
			rep := e.Report
			r.Report = &rep
		}
		if r.Pending == nil || e.ReleaseID != r.Pending.ID {
			return Actions{}, nil
		}
		return a.ack(e.Region, e.ReleaseID, e.Report.ReleasedLocal)
	case ReleaseAcked:
		return a.ack(e.Region, e.ID, e.ReleasedLocal)
	case Tick:
		p, err := a.Rebalance(a.policy(), e.Now)
		if err != nil {
			return Actions{}, err
		}
		return a.Apply(p)
	}
	return Actions{}, errorf("step: unknown event")
}

func (a *Allocation) ack(region, id string, releasedLocal int64) (Actions, error) {
	grants, err := a.AckRelease(region, id, releasedLocal)
	return Actions{Grants: grants}, err
}
