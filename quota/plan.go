package quota

import (
	"errors"
	"math"
	"sort"
)

// Errors the planners answer with, for callers (the gRPC API) to branch on.
var (
	ErrBadAmount = errors.New("amount must be positive")
	ErrAboveNet  = errors.New("above the region's net grant")
	ErrAboveMax  = errors.New("above the region's maximum")
	ErrBadMove   = errors.New("bad move")
	ErrBadPolicy = errors.New("bad policy")
)

// Plan is what a planner decided: grants from the pool and release requests
// to record. A planner never applies it; Apply does. Release requests in a
// plan have no ID yet: Apply assigns it.
type Plan struct {
	Grants   []Grant          `json:"grants,omitempty"`
	Releases []ReleaseRequest `json:"releases,omitempty"`
}

// Empty says whether the plan does nothing.
func (p Plan) Empty() bool { return len(p.Grants) == 0 && len(p.Releases) == 0 }

// Actions is what the caller must now carry out: grants to write (and the
// agents to apply) and release requests (with their IDs) to send.
type Actions struct {
	Grants   []Grant          `json:"grants,omitempty"`
	Releases []ReleaseRequest `json:"releases,omitempty"`
}

// Apply applies a plan through Grant and RequestRelease, all or nothing: it
// is tried on a copy first, so a plan that would take the sum of net grants
// above the total (or is refused for any other reason) changes nothing.
func (a *Allocation) Apply(p Plan) (Actions, error) {
	if _, err := a.Clone().apply(p); err != nil {
		return Actions{}, err
	}
	return a.apply(p)
}

func (a *Allocation) apply(p Plan) (Actions, error) {
	var out Actions
	for _, g := range p.Grants {
		if err := a.Grant(g.Region, g.Units); err != nil {
			return Actions{}, err
		}
		out.Grants = append(out.Grants, g)
	}
	for _, r := range p.Releases {
		req, err := a.requestRelease(r)
		if err != nil {
			return Actions{}, err
		}
		out.Releases = append(out.Releases, req)
	}
	return out, nil
}

// Policy tunes the planners. Times are milliseconds, as everywhere in quota.
type Policy struct {
	SplitPercent int64 `json:"splitPercent"` // share of the pool the initial split grants; the rest follows demand
	HorizonMs    int64 `json:"horizonMs"`    // a region should hold this long of its recent demand
	StaleAfterMs int64 `json:"staleAfterMs"` // a report older than this counts as no demand
	MinKeep      int64 `json:"minKeep"`      // units an idle region keeps for late buyers while stock is ample
}

// DefaultPolicy splits nearly the whole stock at the opening, where demand
// is everywhere, and keeps 5% in the pool, so the first region to run dry
// is answered from the pool without asking anyone to release.
func DefaultPolicy() Policy {
	return Policy{SplitPercent: 95, HorizonMs: 5000, StaleAfterMs: 5000, MinKeep: 2}
}

// Validate names the first bad field.
func (p Policy) Validate() error {
	switch {
	case p.SplitPercent < 0 || p.SplitPercent > 100:
		return errorf("splitPercent %d not in 0..100: %w", p.SplitPercent, ErrBadPolicy)
	case p.HorizonMs <= 0:
		return errorf("horizonMs %d not positive: %w", p.HorizonMs, ErrBadPolicy)
	case p.StaleAfterMs <= 0:
		return errorf("staleAfterMs %d not positive: %w", p.StaleAfterMs, ErrBadPolicy)
	case p.MinKeep < 0:
		return errorf("minKeep %d negative: %w", p.MinKeep, ErrBadPolicy)
	}
	return nil
}

// wanted is the stock a region should hold to meet demand (attempts per
// second) for the horizon, at most total. NaN and negative demand are none.
func (p Policy) wanted(demand float64, total int64) int64 {
	if !(demand > 0) {
		return 0
	}
	w := math.Ceil(demand * float64(p.HorizonMs) / 1000)
	if w >= float64(total) {
		return total
	}
	return int64(w)
}

// Low says whether a region holding available units, with this demand, must
// pull quota now: it is dry while buyers are there, or it holds less than
// half its horizon of demand. Agents report at once when their region turns
// low (or dry again); the planners top low regions up.
func (p Policy) Low(available int64, demand float64, total int64) bool {
	if !(demand > 0) {
		return false
	}
	return available <= 0 || 2*available < p.wanted(demand, total)
}

func (a *Allocation) policy() Policy {
	if a.Policy != nil {
		return *a.Policy
	}
	return DefaultPolicy()
}

// otherRegions lists the regions but one, sorted.
func (a *Allocation) otherRegions(but string) []string {
	var out []string
	for _, n := range a.RegionNames() {
		if n != but {
			out = append(out, n)
		}
	}
	return out
}

// share splits up to n units over names (sorted) in proportion to weight,
// each region's net grant kept within [Min, Max]: the grants are
// clamp(scale*weight, bounds) for the one scale where they sum to n;
// fractions go by largest remainder, ties to the smaller name. When
// the minimums alone exceed n they are ignored. Units no region can take
// (all at their maximum, or all of weight 0) are left out, so the grants
// may sum below n. Weights times n must fit in an int64.
func (a *Allocation) share(n int64, names []string) []Grant {
	lo, hi := map[string]int64{}, map[string]int64{}
	var sumLo int64
	for _, r := range names {
		ra := a.Regions[r]
		lo[r] = max(0, ra.Min-ra.Net())
		hi[r] = math.MaxInt64
		if ra.Max > 0 {
			hi[r] = max(0, ra.Max-ra.Net())
		}
		lo[r] = min(lo[r], hi[r])
		sumLo += lo[r]
	}
	if sumLo > n {
		clear(lo)
	}
	x := map[string]int64{}
	fixed := map[string]bool{}
	for {
		var free []string
		left, weight := n, int64(0)
		for _, r := range names {
			if fixed[r] {
				left -= x[r]
			} else {
				free = append(free, r)
				weight += max(0, a.Regions[r].Weight)
			}
		}
		if len(free) == 0 {
			break
		}
		if weight == 0 {
			for _, r := range free {
				x[r], fixed[r] = lo[r], true
			}
			continue
		}
		// Regions whose share (left*w/weight) is outside their bounds: if
		// clamping them all would leave units over, the scale must rise, so
		// those above their maximum stay above it: fix them there; if it
		// would take too many, fix those below their minimum. Each pass
		// fixes a region or more. Compared multiplied by weight, in integers.
		var over, under int64
		var above, below []string
		for _, r := range free {
			s := left * max(0, a.Regions[r].Weight)
			if hi[r] < math.MaxInt64 && s > hi[r]*weight {
				over += s - hi[r]*weight
				above = append(above, r)
			} else if s < lo[r]*weight {
				under += lo[r]*weight - s
				below = append(below, r)
			}
		}
		if over >= under {
			for _, r := range above {
				x[r], fixed[r] = hi[r], true
			}
		}
		if under >= over {
			for _, r := range below {
				x[r], fixed[r] = lo[r], true
			}
		}
		if len(above)+len(below) > 0 {
			continue
		}
		rem, extra := map[string]int64{}, left
		for _, r := range free {
			w := max(0, a.Regions[r].Weight)
			x[r], rem[r] = left*w/weight, left*w%weight
			extra -= x[r]
		}
		// extra < len(free): the remainders sum to extra*weight, each below weight.
		sort.SliceStable(free, func(i, j int) bool { return rem[free[i]] > rem[free[j]] })
		for i := int64(0); i < extra; i++ {
			x[free[i]]++
		}
		break
	}
	var out []Grant
	for _, r := range names {
		if x[r] > 0 {
			out = append(out, Grant{Region: r, Units: x[r]})
		}
	}
	return out
}
