package coordinator

import (
	"encoding/json"
	"time"

	"flashsale/quota"
)

// planResult is what a planner did to an allocation: the grants it made and
// the release requests it recorded.
type planResult struct {
	grants   []quota.Grant
	releases []quota.ReleaseRequest
	note     string
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
	b, err := json.Marshal(a)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	out, err := decodeAlloc(b)
	if err != nil {
		panic(err)
	}
	return out
}

// The planners below are thin adapters over quota/: they apply a plan to a
// (a copy the caller writes back) and say what they did.

// isSplit says whether the initial split was made: any grant ever.
func isSplit(a *quota.Allocation) bool {
	for _, r := range a.Regions {
		if r.Granted > 0 {
			return true
		}
	}
	return false
}

// planInitialSplit grants the total by weight (largest remainder), within
// each region's maximum.
func planInitialSplit(a *quota.Allocation, _ *saleView, _ time.Time) (planResult, error) {
	var p planResult
	var wsum int64
	names := a.RegionNames()
	for _, n := range names {
		wsum += max(a.Regions[n].Weight, 0)
	}
	if wsum == 0 {
		return p, nil
	}
	left := a.Unallocated()
	for _, n := range names {
		ra := a.Regions[n]
		u := left * max(ra.Weight, 0) / wsum
		if ra.Max > 0 {
			u = min(u, ra.Max-ra.Net())
		}
		u = min(u, a.Unallocated())
		if u <= 0 {
			continue
		}
		if err := a.Grant(n, u); err != nil {
			return p, err
		}
		p.grants = append(p.grants, quota.Grant{Region: n, Units: u})
	}
	// The floor division leaves up to len(names)-1 units: one each, in
	// name order, to regions with weight and room.
	for _, n := range names {
		ra := a.Regions[n]
		if a.Unallocated() == 0 {
			break
		}
		if ra.Weight <= 0 || (ra.Max > 0 && ra.Net() >= ra.Max) || left*ra.Weight%wsum == 0 {
			continue
		}
		if err := a.Grant(n, 1); err != nil {
			return p, err
		}
		p.grants = append(p.grants, quota.Grant{Region: n, Units: 1})
	}
	p.note = "initial split"
	return p, nil
}

// planRebalance hands unallocated units to the live region with the most
// demand.
func (c *Coordinator) planRebalance(a *quota.Allocation, v *saleView, _ time.Time) (planResult, error) {
	attachReports(a, v.reports)
	var p planResult
	best, bestDemand := "", -1.0
	for _, n := range a.RegionNames() {
		ra := a.Regions[n]
		if ra.Report == nil || (ra.Max > 0 && ra.Net() >= ra.Max) {
			continue
		}
		if ra.Report.Demand > bestDemand {
			best, bestDemand = n, ra.Report.Demand
		}
	}
	u := a.Unallocated()
	if best == "" || u <= 0 {
		return p, nil
	}
	if m := a.Regions[best].Max; m > 0 {
		u = min(u, m-a.Regions[best].Net())
	}
	if err := a.Grant(best, u); err != nil {
		return p, err
	}
	p.grants = append(p.grants, quota.Grant{Region: best, Units: u})
	return p, nil
}

// planEndSweep does nothing yet: regions keep what they hold at the end.
func planEndSweep(_ *quota.Allocation, _ *saleView, _ time.Time) (planResult, error) {
	return planResult{}, nil
}

// planMove moves units from one region to another through a release
// request, or grants them from the pool when from is empty. It refuses,
// never clips, a move above the source's net grant or above the total.
func planMove(a *quota.Allocation, from, to string, units int64) (planResult, error) {
	var p planResult
	if from == "" {
		if units > a.Unallocated() {
			return p, refused("units: %d above the %d unallocated would pass the total %d", units, a.Unallocated(), a.Total)
		}
		if err := a.Grant(to, units); err != nil {
			return p, err
		}
		p.grants = append(p.grants, quota.Grant{Region: to, Units: units})
		return p, nil
	}
	if net := a.Regions[from].Net(); units > net {
		return p, refused("units: %d above region %s's net grant %d", units, from, net)
	}
	req, err := a.RequestRelease(from, units, to)
	if err != nil {
		return p, err
	}
	p.releases = append(p.releases, req)
	return p, nil
}

// planDrain asks region for all of its net grant back.
func planDrain(a *quota.Allocation, region string) (planResult, error) {
	var p planResult
	net := a.Regions[region].Net()
	if net <= 0 {
		return p, nil
	}
	req, err := a.RequestRelease(region, net, "")
	if err != nil {
		return p, err
	}
	p.releases = append(p.releases, req)
	return p, nil
}
