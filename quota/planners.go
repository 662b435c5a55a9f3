package quota

import (
	"sort"
)

// The planners read the allocation and answer a Plan; none changes it. They
// never take a region below its Min on their own (only an operator's Drain
// or Move does), never grant a region above its Max, and grant nothing to a
// region of weight 0 (how a drain is made to stick).

// InitialSplit grants p.SplitPercent of the unallocated pool (at least the
// regions' minimums) by weight, within each region's minimum and maximum.
// The rest stays in the pool for Rebalance to grant where it sells.
func (a *Allocation) InitialSplit(p Policy) (Plan, error) {
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	pool := a.Unallocated()
	var mins int64
	for _, n := range a.RegionNames() {
		r := a.Regions[n]
		if r.Max > 0 && r.Min > r.Max {
			return Plan{}, errorf("initial split: region %s min %d above max %d: %w", n, r.Min, r.Max, ErrAboveMax)
		}
		mins += max(0, r.Min-r.Net())
	}
	if mins > pool {
		return Plan{}, errorf("initial split: region minimums %d above the %d unallocated: %w", mins, pool, ErrOverTotal)
	}
	return Plan{Grants: a.share(max(pool*p.SplitPercent/100, mins), a.RegionNames())}, nil
}

// Rebalance lets grants follow demand: a region holding less than the
// policy's horizon of its recent demand gets up to one chunk from the pool
// (highest demand first, while the pool lasts); a region whose available
// stock is well above its horizon (IdleMultiple times, plus MinKeep) is
// asked to release the excess back to the pool. A stale report counts as no
// demand, and a stale region is asked for nothing: it could not answer.
func (a *Allocation) Rebalance(p Policy, now int64) (Plan, error) {
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	var plan Plan
	pool, chunk := a.Unallocated(), p.chunk(a.Total)
	for _, v := range a.byDemand(now, p) {
		want := p.wanted(v.LiveDemand(), a.Total)
		if g := min(chunk, v.need(want), pool); g > 0 {
			plan.Grants = append(plan.Grants, Grant{Region: v.Region, Units: g})
			pool -= g
		}
		if v.Fresh && v.Pending == nil && v.Available > p.IdleMultiple*want+p.MinKeep {
			if k := min(v.Available-want-p.MinKeep, v.Net-v.Min); k > 0 {
				plan.Releases = append(plan.Releases, ReleaseRequest{Region: v.Region, Units: k})
			}
		}
	}
	return plan, nil
}

// EndSweep, near the end of a sale, sends leftovers where buyers still are:
// the pool is granted to the regions still selling (by demand, without the
// chunk limit), and each region with unused stock and no live demand is
// asked to release it to the selling region that needs most. Nothing moves
// when no region is selling.
func (a *Allocation) EndSweep(p Policy, now int64) (Plan, error) {
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	var plan Plan
	pool := a.Unallocated()
	need := map[string]int64{}
	var sellers, idle []RegionStatus
	for _, v := range a.byDemand(now, p) {
		if n := v.need(p.wanted(v.LiveDemand(), a.Total)); n > 0 {
			g := min(n, pool)
			if g > 0 {
				plan.Grants = append(plan.Grants, Grant{Region: v.Region, Units: g})
				pool -= g
			}
			need[v.Region] = n - g
			sellers = append(sellers, v)
		} else if v.LiveDemand() <= 0 && v.Pending == nil && v.Available > 0 {
			idle = append(idle, v)
		}
	}
	sort.SliceStable(idle, func(i, j int) bool { return idle[i].Available > idle[j].Available })
	for _, v := range idle {
		to := ""
		for _, s := range sellers {
			if to == "" || need[s.Region] > need[to] {
				to = s.Region
			}
		}
		k := min(v.Available, v.Net-v.Min, need[to])
		if to == "" || k <= 0 {
			continue
		}
		plan.Releases = append(plan.Releases, ReleaseRequest{Region: v.Region, Units: k, To: to})
		need[to] -= k
	}
	return plan, nil
}

// Drain asks region for all of its net grant: the release script gives what
// is unused, so sold and reserved units stay. The units freed return to the
// pool, or with spread are granted to the other regions by weight when the
// release is acknowledged. To keep Rebalance from granting the region again,
// set its weight to 0.
func (a *Allocation) Drain(region string, spread bool) (Plan, error) {
	r, ok := a.Regions[region]
	if !ok {
		return Plan{}, errorf("drain %s: %w", region, ErrUnknownRgn)
	}
	if r.Pending != nil {
		return Plan{}, errorf("drain %s: %w (%s)", region, ErrReleaseBusy, r.Pending.ID)
	}
	if r.Net() <= 0 {
		return Plan{}, nil
	}
	return Plan{Releases: []ReleaseRequest{{Region: region, Units: r.Net(), Spread: spread}}}, nil
}

// Move asks region from to release n units for region to; they are granted
// to to only when from acknowledges (AckRelease), and only as many as it
// freed.
func (a *Allocation) Move(from, to string, n int64) (Plan, error) {
	fr, ok := a.Regions[from]
	if !ok {
		return Plan{}, errorf("move %d from %s: %w", n, from, ErrUnknownRgn)
	}
	tr, ok := a.Regions[to]
	switch {
	case !ok:
		return Plan{}, errorf("move %d to %s: %w", n, to, ErrUnknownRgn)
	case n <= 0:
		return Plan{}, errorf("move %d from %s to %s: %w", n, from, to, ErrBadAmount)
	case from == to:
		return Plan{}, errorf("move %d from %s to itself: %w", n, from, ErrBadMove)
	case fr.Pending != nil:
		return Plan{}, errorf("move from %s: %w (%s)", from, ErrReleaseBusy, fr.Pending.ID)
	case n > fr.Net():
		return Plan{}, errorf("move %d from %s with net grant %d: %w", n, from, fr.Net(), ErrAboveNet)
	case tr.Max > 0 && tr.Net()+n > tr.Max:
		return Plan{}, errorf("move %d to %s with net grant %d and max %d: %w", n, to, tr.Net(), tr.Max, ErrAboveMax)
	}
	return Plan{Releases: []ReleaseRequest{{Region: from, Units: n, To: to}}}, nil
}

// byDemand is the status view by live demand, highest first, ties by name.
func (a *Allocation) byDemand(now int64, p Policy) []RegionStatus {
	v := a.Status(now, p).Regions
	sort.SliceStable(v, func(i, j int) bool { return v[i].LiveDemand() > v[j].LiveDemand() })
	return v
}

// need is how many units short of want the region is, within its maximum;
// a region of weight 0 needs nothing.
func (s RegionStatus) need(want int64) int64 {
	if s.Weight <= 0 {
		return 0
	}
	n := want - max(0, s.Available)
	if s.Max > 0 {
		n = min(n, s.Max-s.Net)
	}
	return n
}
