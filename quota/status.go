package quota

// RegionStatus is one region's view: the coordinator's counters and what its
// latest report says. Available = Net - Sold - Reserved: counting the net
// grant rather than the ceiling the region last reported means a grant not
// yet applied is not granted twice.
type RegionStatus struct {
	Region    string          `json:"region"`
	Weight    int64           `json:"weight"`
	Min       int64           `json:"min,omitempty"`
	Max       int64           `json:"max,omitempty"`
	Granted   int64           `json:"granted"`
	Released  int64           `json:"released"`
	Net       int64           `json:"net"`
	Sold      int64           `json:"sold"`
	Reserved  int64           `json:"reserved"`
	Available int64           `json:"available"`
	Demand    float64         `json:"demand"` // as reported, even when stale
	AgeMs     int64           `json:"ageMs"`  // since the report; -1: never reported
	Fresh     bool            `json:"fresh"`  // reported within the policy's StaleAfterMs
	Pending   *ReleaseRequest `json:"pending,omitempty"`
}

// LiveDemand is the demand the planners act on: none from a stale report.
func (s RegionStatus) LiveDemand() float64 {
	if !s.Fresh {
		return 0
	}
	return s.Demand
}

// Status is the whole sale: the regions in name order and their totals.
type Status struct {
	Sale        string         `json:"sale"`
	Total       int64          `json:"total"`
	SumNet      int64          `json:"sumNet"`
	Unallocated int64          `json:"unallocated"`
	Sold        int64          `json:"sold"`
	Reserved    int64          `json:"reserved"`
	Available   int64          `json:"available"`
	Regions     []RegionStatus `json:"regions"`
}

// Status returns the view at now (unix ms); p decides which reports are
// stale. A report dated after now (clock skew) has age 0.
func (a *Allocation) Status(now int64, p Policy) Status {
	st := Status{Sale: a.Sale, Total: a.Total, SumNet: a.SumNet(), Unallocated: a.Unallocated()}
	for _, n := range a.RegionNames() {
		r := a.Regions[n]
		v := RegionStatus{Region: n, Weight: r.Weight, Min: r.Min, Max: r.Max,
			Granted: r.Granted, Released: r.Released, Net: r.Net(), AgeMs: -1}
		if r.Pending != nil {
			pr := *r.Pending
			v.Pending = &pr
		}
		if rep := r.Report; rep != nil {
			v.Sold, v.Reserved, v.Demand = rep.Sold, rep.Reserved, rep.Demand
			v.AgeMs = max(0, now-rep.At)
			v.Fresh = v.AgeMs <= p.StaleAfterMs
		}
		v.Available = v.Net - v.Sold - v.Reserved
		st.Sold += v.Sold
		st.Reserved += v.Reserved
		st.Available += v.Available
		st.Regions = append(st.Regions, v)
	}
	return st
}
