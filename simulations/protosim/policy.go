package protosim

import "flashsale/quota"

// decision is what the local policy wants written: grants from the
// unallocated pool, or one move (a release request bound for a region).
type decision struct {
	grants []quota.Grant
	move   *quota.ReleaseRequest
}

// openingPct of the stock is split evenly at the opening. All of it: the rest
// of the sale then exercises moves (release, ack, regrant), the path the
// simulation exists to check, instead of grants from a pool.
const openingPct = 100

// plan is a deliberately small stand-in for quota's planners: the stock
// split evenly at the opening, then chunks from the pool to the busiest
// region that runs low, then moves from the region with most spare stock to
// the busiest one that runs low; idle regions give stock back to the pool
// when it runs low. It reads reports that may be stale; safety
// never depends on it.
func plan(a *quota.Allocation, reports map[string]storedReport, chunk int64) decision {
	names := a.RegionNames()
	opening := true
	for _, n := range names {
		if a.Regions[n].Granted > 0 {
			opening = false
		}
	}
	if opening {
		per := max(1, a.Total*openingPct/100/int64(len(names)))
		var d decision
		left := a.Unallocated()
		for _, n := range names {
			g := min(per, left)
			if g > 0 {
				d.grants = append(d.grants, quota.Grant{Region: n, Units: g})
				left -= g
			}
		}
		return d
	}

	free := make(map[string]int64, len(names))
	demand := make(map[string]float64, len(names))
	incoming := map[string]bool{}
	for _, n := range names {
		r := a.Regions[n]
		free[n] = r.Net()
		demand[n] = 1 // no report yet: assume some demand
		if rep, ok := reports[n]; ok {
			free[n] = r.Net() - rep.rep.Sold - rep.rep.Reserved
			demand[n] = rep.rep.Demand
		}
		if r.Pending != nil && r.Pending.To != "" {
			incoming[r.Pending.To] = true
		}
	}

	// An idle region (under one attempt a second) holding stock gives half of it back while the pool
	// runs low, so the stock can follow demand.
	if a.Unallocated() < chunk {
		for _, n := range names {
			if demand[n] < 1 && free[n] >= chunk && a.Regions[n].Pending == nil {
				return decision{move: &quota.ReleaseRequest{Region: n, Units: free[n] / 2}}
			}
		}
	}

	// The busiest region running low, with no move already bound for it.
	needy := ""
	for _, n := range names {
		if demand[n] > 0 && free[n] < chunk && !incoming[n] && (needy == "" || demand[n] > demand[needy]) {
			needy = n
		}
	}
	if needy == "" {
		return decision{}
	}
	if u := a.Unallocated(); u > 0 {
		return decision{grants: []quota.Grant{{Region: needy, Units: min(chunk, u)}}}
	}
	donor := ""
	for _, n := range names {
		if n == needy || a.Regions[n].Pending != nil || free[n] < 2 || demand[n] > demand[needy] {
			continue
		}
		if donor == "" || free[n] > free[donor] {
			donor = n
		}
	}
	if donor == "" {
		return decision{}
	}
	return decision{move: &quota.ReleaseRequest{Region: donor, Units: min(chunk, free[donor]/2), To: needy}}
}
