package quota

import (
	"math"
	"sort"
)

// The planners read the allocation and answer a Plan; none changes it. They
// never take a region below its Min on their own (only an operator's Drain
// or Move does), never grant a region above its Max, and grant nothing to a
// region of weight 0 (how a drain is made to stick).

// InitialSplit grants p.SplitPercent of the unallocated pool (at least the
// regions' minimums), within each region's minimum and maximum, by weight,
// or, when fresh reports at now show demand before the opening, mostly by
// that demand: each region's share is 10% its weight's and 90% its
// demand's. The rest stays in the pool, for the first regions to run dry.
func (a *Allocation) InitialSplit(p Policy, now int64) (Plan, error) {
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
	return Plan{Grants: a.demandWeighted(now, p).share(max(pool*p.SplitPercent/100, mins), a.RegionNames())}, nil
}

// splitScale is the weight a blended split divides among the regions.
const splitScale = 1_000_000

// demandWeighted is a copy of a whose weights blend the configured weights
// (10%) with the live demand (90%) of the regions of positive weight; a
// itself when no such region reports demand. A region of weight 0 (drained)
// stays at 0.
func (a *Allocation) demandWeighted(now int64, p Policy) *Allocation {
	var d float64
	var w int64
	st := a.Status(now, p)
	for _, v := range st.Regions {
		if v.Weight > 0 {
			d += v.LiveDemand()
			w += v.Weight
		}
	}
	if !(d > 0) {
		return a
	}
	b := a.Clone()
	for _, v := range st.Regions {
		if v.Weight <= 0 {
			continue
		}
		share := 0.1*float64(v.Weight)/float64(w) + 0.9*v.LiveDemand()/d
		b.Regions[v.Region].Weight = max(1, int64(share*splitScale))
	}
	return b
}

// Rebalance moves quota to where the buyers are, and only as much as it
// must: a region that is not low (Policy.Low) gets nothing and a region
// nobody needs stock from gives nothing, so steady, even demand moves no
// quota at all, whatever the noise in the demand figures.
//
//   - A region's target is the stock it should hold: its horizon of demand
//     (Policy.HorizonMs) while stock is ample; when the regions' horizons
//     together exceed the stock left (pool plus every live region's
//     available), the sale will sell out within the horizon, and the target
//     is its demand's share of that stock, so the last units go where the
//     buyers are, in proportion.
//   - Low regions short of their target get it from the pool, largest
//     demand first, sized by their demand, not by a fixed chunk.
//   - What the pool cannot cover is asked of the regions holding most above
//     what they keep (their target, or MinKeep for an idle region while
//     stock is ample), released straight to the short region: a move, whose
//     units are granted only on the giver's acknowledgement.
//   - Damping: a short region that is not dry must lack a quarter of its
//     target, and a giver with demand must hold a quarter above its own,
//     before anything moves between them; when scarce, a giver whose buyers
//     are still there gives only to a dry region (the pool still tops up
//     any low region, and an idle giver any short one). Each release
//     carries the giver's floor (Keep), which the release script honours
//     whatever the giver sold since the figures this plan was made from.
//
// A stale report counts as no demand, and a stale region is neither topped
// up nor asked for anything: it could not answer.
func (a *Allocation) Rebalance(p Policy, now int64) (Plan, error) {
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	views := a.byDemand(now, p)
	pool := a.Unallocated()
	left, wantSum, demand := pool, int64(0), 0.0
	for _, v := range views {
		if !v.Fresh {
			continue
		}
		left += max(0, v.Available)
		if v.Weight > 0 {
			wantSum += p.wanted(v.LiveDemand(), a.Total)
			demand += v.LiveDemand()
		}
	}
	scarce := demand > 0 && wantSum >= left
	// target is the stock v should hold; up rounds a scarce share up (for a
	// region short of stock: the last units must still go somewhere) or
	// down (for a giver: a region whose buyers are gone keeps nothing of
	// its fading demand).
	target := func(v RegionStatus, up bool) int64 {
		if v.Weight <= 0 {
			return 0
		}
		if scarce {
			share := float64(left) * v.LiveDemand() / demand
			if up {
				return int64(math.Ceil(share))
			}
			return int64(share)
		}
		if v.LiveDemand() <= 0 {
			return p.MinKeep
		}
		return p.wanted(v.LiveDemand(), a.Total)
	}
	incoming := map[string]int64{} // units already on their way to a region
	for _, v := range views {
		if v.Pending != nil && v.Pending.To != "" {
			incoming[v.Pending.To] += v.Pending.Units
		}
	}

	var plan Plan
	short := map[string]int64{}
	var receivers []string
	for _, v := range views {
		if !v.Fresh || !p.Low(v.Available, v.LiveDemand(), a.Total) {
			continue
		}
		t := target(v, true)
		need := v.need(t) - incoming[v.Region]
		if need <= 0 || (v.Available > 0 && 4*need < t) {
			continue
		}
		if g := min(need, pool); g > 0 {
			plan.Grants = append(plan.Grants, Grant{Region: v.Region, Units: g})
			pool -= g
			need -= g
		}
		if need > 0 {
			short[v.Region] = need
			receivers = append(receivers, v.Region)
		}
	}
	if len(receivers) == 0 {
		return plan, nil
	}
	type giver struct {
		v            RegionStatus
		excess, keep int64
	}
	var givers []giver
	for _, v := range views {
		if !v.Fresh || v.Pending != nil || short[v.Region] > 0 || p.Low(v.Available, v.LiveDemand(), a.Total) && !scarce {
			continue
		}
		keep := target(v, false)
		excess := min(v.Available-keep, v.Net-v.Min)
		if excess <= 0 || (v.LiveDemand() > 0 && 4*excess < keep) {
			continue
		}
		givers = append(givers, giver{v, excess, keep})
	}
	sort.SliceStable(givers, func(i, j int) bool { return givers[i].excess > givers[j].excess })
	dry := map[string]bool{}
	for _, v := range views {
		dry[v.Region] = v.Available <= 0
	}
	for _, g := range givers {
		to := ""
		for _, r := range receivers { // by demand, highest first
			// When scarce every region is low, and the others' figures
			// are up to a report old: from a giver whose buyers are still
			// there only a region known to be dry takes, or regions
			// selling evenly would pass stock to and fro.
			if short[r] > 0 && (!scarce || dry[r] || g.v.LiveDemand() <= 0) {
				to = r
				break
			}
		}
		if to == "" {
			continue
		}
		k := min(g.excess, short[to])
		plan.Releases = append(plan.Releases, ReleaseRequest{Region: g.v.Region, Units: k, To: to, Keep: g.keep})
		short[to] -= k
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
		} else if v.Fresh && v.LiveDemand() <= 0 && v.Pending == nil && v.Available > 0 {
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
