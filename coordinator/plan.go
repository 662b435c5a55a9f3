package coordinator

import (
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/quota"
)

// planResult is what was applied to an allocation: grants and release
// requests (with their ids), as quota.Apply and acks report them.
type planResult struct {
	grants   []quota.Grant
	releases []quota.ReleaseRequest
	note     string
}

func fromActions(a quota.Actions, note string) planResult {
	return planResult{grants: a.Grants, releases: a.Releases, note: note}
}

// fromPlan is a plan not applied yet (its releases have no id).
func fromPlan(p quota.Plan, note string) planResult {
	return planResult{grants: p.Grants, releases: p.Releases, note: note}
}

func (p planResult) empty() bool { return len(p.grants) == 0 && len(p.releases) == 0 }

func (p *planResult) add(q planResult) {
	p.grants = append(p.grants, q.grants...)
	p.releases = append(p.releases, q.releases...)
	if q.note != "" {
		if p.note != "" {
			p.note += "; "
		}
		p.note += q.note
	}
}

func (c *Coordinator) countPlan(p planResult) {
	for _, g := range p.grants {
		c.m.granted.Add(float64(g.Units))
	}
	for _, r := range p.releases {
		c.m.requested.Add(float64(r.Units))
	}
}

// cloneAlloc deep-copies an allocation, so a plan is made on a copy and the
// original stays what etcd holds.
func cloneAlloc(a *quota.Allocation) *quota.Allocation {
	out := a.Clone()
	if out.Regions == nil {
		out.Regions = map[string]*quota.RegionAlloc{}
	}
	return out
}

// takeReports feeds v's reports to the allocation (quota.TakeReports:
// the newest report is kept, an ack naming the pending release applied)
// and returns the grants acks made; the compares their write must make
// go to v.ackCmps.
func (c *Coordinator) takeReports(a *quota.Allocation, v *saleView) planResult {
	rd := a.TakeReports(storedReports(v), quota.RoundBugs{})
	c.taken(a.Sale, v, rd)
	return fromActions(rd.Actions, rd.Note)
}

// storedReports are v's reports as quota takes them, with their mod
// revisions.
func storedReports(v *saleView) map[string]quota.StoredReport {
	out := make(map[string]quota.StoredReport, len(v.reports))
	for r, rep := range v.reports {
		out[r] = quota.StoredReport{Report: rep.Report, ReleaseID: rep.ReleaseID, Rev: v.revs[r]}
	}
	return out
}

// taken logs the reports a round refused (a malformed ack, released_local
// above granted, is the agent's bug: the release stays pending and the
// rest goes on) and adds to v.ackCmps a compare per ack: the report it
// came from is still the one etcd holds.
func (c *Coordinator) taken(sale string, v *saleView, rd quota.Round) {
	for _, err := range rd.Refused {
		c.log.Error("refusing report", "sale", sale, "err", err)
	}
	regions := make([]string, 0, len(rd.AckedRevs))
	for r := range rd.AckedRevs {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		v.ackCmps = append(v.ackCmps, clientv3.Compare(clientv3.ModRevision(c.keys.Report(r, sale)), "=", rd.AckedRevs[r]))
	}
}

// planMove moves units from one region to another through a release
// request (granted to to on the ack), or grants them from the pool when
// from is empty. It refuses, never clips, a move above the source's net
// grant, above the target's maximum or above the total.
func planMove(a *quota.Allocation, from, to string, units int64) (planResult, error) {
	var plan quota.Plan
	if from == "" {
		if units > a.Unallocated() {
			return planResult{}, refused("units: %d above the %d unallocated would pass the total %d", units, a.Unallocated(), a.Total)
		}
		if r := a.Regions[to]; r.Max > 0 && r.Net()+units > r.Max {
			return planResult{}, refused("units: %d would take region %s's net grant %d above its max %d", units, to, r.Net(), r.Max)
		}
		plan.Grants = []quota.Grant{{Region: to, Units: units}}
	} else {
		var err error
		if plan, err = a.Move(from, to, units); err != nil {
			return planResult{}, err
		}
	}
	acts, err := a.Apply(plan)
	if err != nil {
		return planResult{}, err
	}
	return fromActions(acts, "operator move"), nil
}

// planDrain sets region's weight to 0 (so the planners grant it nothing
// more) and asks it for its whole net grant.
func planDrain(a *quota.Allocation, region string, spread bool) (planResult, error) {
	plan, err := a.Drain(region, spread)
	if err != nil {
		return planResult{}, err
	}
	a.Regions[region].Weight = 0
	acts, err := a.Apply(plan)
	if err != nil {
		return planResult{}, err
	}
	return fromActions(acts, "drain "+region), nil
}
