package quota

import (
	"errors"
	"sort"
)

// ErrBelowHeld: a total below the units the regions hold and cannot give
// back (sold, reserved, or granted to a region that does not report).
var ErrBelowHeld = errors.New("below the units sold and reserved")

// SetTotal changes the sale's total to n, or says what must happen first.
//
// Raising the total, or lowering it by no more than the unallocated pool,
// is done at once: the pool grows or shrinks and the planners grant from it
// as usual. Lowering it below the sum of net grants needs units back from
// the regions, since I2 (sum of net grants <= total) must hold at every
// write: SetTotal leaves the total as it is and returns release requests
// to the pool for the difference, taken from the regions' unsold quota
// (net - sold - reserved, from their reports), largest first, skipping a
// region with a release already pending. The caller applies them, waits
// for the acknowledgements and calls SetTotal again; the change is done
// when a.Total == n.
//
// A region's report is what it holds: the caller passes the allocation the
// planners see, where a region without a live report has none, and its
// whole net grant counts as held (it cannot be asked). A total below what
// is held is refused with ErrBelowHeld, naming the numbers.
func (a *Allocation) SetTotal(n int64) (Plan, error) {
	if n <= 0 {
		return Plan{}, errorf("total %d: %w", n, ErrBadAmount)
	}
	sum := a.SumNet()
	if n >= sum {
		a.Total = n
		return Plan{}, nil
	}
	var sold, reserved, silent int64
	type free struct {
		region string
		units  int64
	}
	var frees []free
	for _, name := range a.RegionNames() {
		r := a.Regions[name]
		if r.Report == nil {
			silent += r.Net()
			continue
		}
		sold += r.Report.Sold
		reserved += r.Report.Reserved
		if k := r.Net() - r.Report.Sold - r.Report.Reserved; k > 0 && r.Pending == nil {
			frees = append(frees, free{name, k})
		}
	}
	if held := sold + reserved + silent; n < held {
		return Plan{}, errorf("total %d is below the %d units the regions hold (%d sold, %d reserved, %d granted to regions not reporting); the lowest total now is %d: %w",
			n, held, sold, reserved, silent, held, ErrBelowHeld)
	}
	sort.SliceStable(frees, func(i, j int) bool { return frees[i].units > frees[j].units })
	var plan Plan
	need := sum - n
	for _, f := range frees {
		if need == 0 {
			break
		}
		k := min(f.units, need)
		plan.Releases = append(plan.Releases, ReleaseRequest{Region: f.region, Units: k})
		need -= k
	}
	return plan, nil
}
