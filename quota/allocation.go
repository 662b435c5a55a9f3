package quota

import (
	"sort"
	"strconv"
)

// Report is what a region agent last told the coordinator about one sale.
// At is the report time in unix milliseconds, passed in by the caller.
type Report struct {
	Sold          int64   `json:"sold"`
	Reserved      int64   `json:"reserved"`
	ReleasedLocal int64   `json:"releasedLocal"`
	GrantedSeen   int64   `json:"grantedSeen"`
	Demand        float64 `json:"demand"` // reserve attempts per second, recent
	At            int64   `json:"at"`
	// Epoch is the region's seller epoch (DESIGN §4.5). The agent reports
	// a new one before Redis gets it, and the allocation keeps the last
	// report, so a successor reads the epoch floor from etcd and the
	// epoch never rolls back with writes Redis lost.
	Epoch int64 `json:"epoch,omitempty"`
}

// ReleaseRequest asks region Region to give up to Units unused units. When
// To is set, the units acknowledged are granted to region To (a move); when
// Spread is set, they are granted to the other regions by weight (a drain);
// otherwise they return to the unallocated pool.
type ReleaseRequest struct {
	ID     string `json:"id"`
	Region string `json:"region"`
	Units  int64  `json:"units"`
	// Keep is what the region keeps whatever Units says: the planner's
	// floor for it, from figures up to a report old (quota.Ledger.Release).
	Keep   int64  `json:"keep,omitempty"`
	To     string `json:"to,omitempty"`
	Spread bool   `json:"spread,omitempty"`
}

// Grant raises region Region's cumulative granted counter by Units.
type Grant struct {
	Region string `json:"region"`
	Units  int64  `json:"units"`
}

// RegionAlloc is one region's part of the allocation record: two monotone
// counters (DESIGN §4), bounds and weight, the pending release and the
// latest report.
type RegionAlloc struct {
	Granted  int64           `json:"granted"`  // sum of all grants ever made; never decreases
	Released int64           `json:"released"` // max of acknowledged released_local; never decreases
	Weight   int64           `json:"weight,omitempty"`
	Min      int64           `json:"min,omitempty"`
	Max      int64           `json:"max,omitempty"` // 0: no maximum
	Pending  *ReleaseRequest `json:"pending,omitempty"`
	Report   *Report         `json:"report,omitempty"`
}

// Net is the region's net grant: granted - released.
func (r *RegionAlloc) Net() int64 { return r.Granted - r.Released }

// Allocation is the coordinator's record of one sale: one etcd document, so
// one compare guards the sum of net grants.
type Allocation struct {
	Sale        string                  `json:"sale"`
	Total       int64                   `json:"total"`
	Regions     map[string]*RegionAlloc `json:"regions"`
	NextRelease int64                   `json:"nextRelease"`      // last release id number issued
	Policy      *Policy                 `json:"policy,omitempty"` // nil: DefaultPolicy()
}

// NewAllocation returns an allocation of total units over the named regions,
// nothing granted yet.
func NewAllocation(sale string, total int64, regions ...string) *Allocation {
	a := &Allocation{Sale: sale, Total: total, Regions: map[string]*RegionAlloc{}}
	for _, r := range regions {
		a.Regions[r] = &RegionAlloc{Weight: 1}
	}
	return a
}

// RegionBounds is how a sale's definition shapes one region's part: its
// weight in the split and its bounds on the net grant (Max 0: none).
type RegionBounds struct {
	Name             string
	Weight, Min, Max int64
}

// NewSale is a new sale's allocation, before the initial split: its
// regions with their weights and bounds, nothing granted, and the policy
// every leader will plan it with (stored with it).
func NewSale(sale string, total int64, regions []RegionBounds, p Policy) *Allocation {
	a := &Allocation{Sale: sale, Total: total, Regions: map[string]*RegionAlloc{}, Policy: &p}
	for _, r := range regions {
		a.Regions[r.Name] = &RegionAlloc{Weight: r.Weight, Min: r.Min, Max: r.Max}
	}
	return a
}

// RegionNames returns the regions in sorted order, so every loop over them is
// deterministic.
func (a *Allocation) RegionNames() []string {
	names := make([]string, 0, len(a.Regions))
	for n := range a.Regions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SumNet is the sum of net grants over all regions.
func (a *Allocation) SumNet() int64 {
	var s int64
	for _, r := range a.Regions {
		s += r.Net()
	}
	return s
}

// Unallocated is the stock no region holds: total - sum of net grants.
func (a *Allocation) Unallocated() int64 { return a.Total - a.SumNet() }

// Grant raises region's granted counter by n. It refuses (never clips) a
// grant that would take the sum of net grants above the total (I2).
func (a *Allocation) Grant(region string, n int64) error {
	r, ok := a.Regions[region]
	if !ok {
		return errorf("grant %d to %s: %w", n, region, ErrUnknownRgn)
	}
	if n < 0 {
		return errorf("grant %d to %s: %w", n, region, ErrNegative)
	}
	if n > a.Unallocated() {
		return errorf("grant %d to %s with %d unallocated: %w", n, region, a.Unallocated(), ErrOverTotal)
	}
	r.Granted += n
	return nil
}

// Check verifies the allocation's own invariants: counters non-negative,
// released <= granted, and the sum of net grants <= total (I2).
func (a *Allocation) Check() error {
	for _, n := range a.RegionNames() {
		r := a.Regions[n]
		if r.Granted < 0 || r.Released < 0 || r.Released > r.Granted {
			return errorf("region %s: granted %d released %d", n, r.Granted, r.Released)
		}
	}
	if s := a.SumNet(); s > a.Total {
		return errorf("I2: sum of net grants %d > total %d", s, a.Total)
	}
	return nil
}

// RequestRelease records a release request of up to units from region,
// bound for region to (empty: back to the pool). A region has at most one
// pending release; it stays pending until acknowledged.
func (a *Allocation) RequestRelease(region string, units int64, to string) (ReleaseRequest, error) {
	return a.requestRelease(ReleaseRequest{Region: region, Units: units, To: to})
}

// requestRelease records req (its ID is assigned here); Apply uses it for
// the fields RequestRelease has no parameter for.
func (a *Allocation) requestRelease(req ReleaseRequest) (ReleaseRequest, error) {
	region, units, to := req.Region, req.Units, req.To
	if to != "" && req.Spread {
		return ReleaseRequest{}, errorf("release from %s: both to %s and spread: %w", region, to, ErrBadMove)
	}
	r, ok := a.Regions[region]
	if !ok {
		return ReleaseRequest{}, errorf("release from %s: %w", region, ErrUnknownRgn)
	}
	if _, ok := a.Regions[to]; to != "" && !ok {
		return ReleaseRequest{}, errorf("release to %s: %w", to, ErrUnknownRgn)
	}
	if units < 0 {
		return ReleaseRequest{}, errorf("release %d from %s: %w", units, region, ErrNegative)
	}
	if r.Pending != nil {
		return ReleaseRequest{}, errorf("release from %s: %w (%s)", region, ErrReleaseBusy, r.Pending.ID)
	}
	a.NextRelease++
	req.ID = a.Sale + "-" + strconv.FormatInt(a.NextRelease, 10)
	r.Pending = &req
	return req, nil
}

// AckRelease applies a region's acknowledgement of its pending release id
// with its cumulative released_local: released = max(released, ack). Only
// then are the units it freed granted elsewhere: to the request's target
// region, or with Spread over the other regions by weight (see share), in
// the grants returned (already applied to a).
func (a *Allocation) AckRelease(region, id string, releasedLocal int64) ([]Grant, error) {
	r, ok := a.Regions[region]
	if !ok {
		return nil, errorf("ack from %s: %w", region, ErrUnknownRgn)
	}
	if r.Pending == nil || r.Pending.ID != id {
		return nil, errorf("ack %s from %s: %w", id, region, ErrNotPending)
	}
	if releasedLocal > r.Granted {
		return nil, errorf("ack %s from %s: released_local %d above granted %d", id, region, releasedLocal, r.Granted)
	}
	req := *r.Pending
	freed := max(0, releasedLocal-r.Released)
	r.Released = max(r.Released, releasedLocal)
	r.Pending = nil
	if (req.To == "" && !req.Spread) || freed == 0 {
		return nil, nil
	}
	// A cumulative ack may also cover units an earlier, lost ack freed; they
	// are unallocated now either way, so the move takes at most what it asked.
	n := min(freed, req.Units, a.Unallocated())
	grants := []Grant{{Region: req.To, Units: n}}
	if req.Spread {
		grants = a.share(n, a.otherRegions(region))
	}
	for _, g := range grants {
		if err := a.Grant(g.Region, g.Units); err != nil {
			return nil, err
		}
	}
	return grants, nil
}

// Clone returns a deep copy, so a plan can be tried (or made) on a copy
// while the original stays what etcd holds.
func (a *Allocation) Clone() *Allocation {
	b := *a
	b.Regions = make(map[string]*RegionAlloc, len(a.Regions))
	for n, r := range a.Regions {
		rc := *r
		if r.Pending != nil {
			p := *r.Pending
			rc.Pending = &p
		}
		if r.Report != nil {
			p := *r.Report
			rc.Report = &p
		}
		b.Regions[n] = &rc
	}
	if a.Policy != nil {
		p := *a.Policy
		b.Policy = &p
	}
	return &b
}
