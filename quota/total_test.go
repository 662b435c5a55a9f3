package quota_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"flashsale/quota"
)

// totalAlloc is a sale of 1000 over us, eu, ap with the given net grants
// and reports (nil: the region does not report).
func totalAlloc(t *testing.T, nets map[string]int64, reps map[string]*quota.Report) *quota.Allocation {
	t.Helper()
	a := quota.NewAllocation("s", 1000, "ap", "eu", "us")
	for r, n := range nets {
		if err := a.Grant(r, n); err != nil {
			t.Fatal(err)
		}
	}
	for r, rep := range reps {
		a.Regions[r].Report = rep
	}
	return a
}

func TestSetTotal(t *testing.T) {
	nets := map[string]int64{"us": 300, "eu": 200, "ap": 100} // 600 granted, 400 in the pool
	reps := map[string]*quota.Report{
		"us": {Sold: 250, Reserved: 10}, // 40 free
		"eu": {Sold: 50},                // 150 free
		"ap": {Sold: 100},               // sold out
	}
	for _, tc := range []struct {
		name     string
		to       int64
		pending  string // region with a release pending
		silent   string // region without a report
		total    int64  // a.Total afterwards
		releases string
		err      string
	}{
		{name: "raise", to: 1500, total: 1500},
		{name: "lower within the pool", to: 600, total: 600},
		{name: "lower below the grants: largest free first", to: 500, total: 1000, releases: "eu:100"},
		{name: "lower needing two regions", to: 420, total: 1000, releases: "eu:150 us:30"},
		{name: "down to what is held", to: 410, total: 1000, releases: "eu:150 us:40"},
		{name: "below sold and reserved", to: 409, total: 1000,
			err: "total 409 is below the 410 units the regions hold (400 sold, 10 reserved, 0 granted to regions not reporting); the lowest total now is 410"},
		{name: "a silent region's grant is held", to: 500, silent: "eu", total: 1000,
			err: "total 500 is below the 560 units the regions hold (350 sold, 10 reserved, 200 granted to regions not reporting)"},
		{name: "pending region skipped", to: 500, pending: "eu", total: 1000, releases: "us:40"},
		{name: "zero", to: 0, total: 1000, err: "total 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := totalAlloc(t, nets, reps)
			if tc.silent != "" {
				a.Regions[tc.silent].Report = nil
			}
			if tc.pending != "" {
				if _, err := a.RequestRelease(tc.pending, 1, ""); err != nil {
					t.Fatal(err)
				}
			}
			before := a.Clone()
			plan, err := a.SetTotal(tc.to)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("SetTotal(%d) = %v, want an error containing %q", tc.to, err, tc.err)
				}
				if tc.to > 0 && !errors.Is(err, quota.ErrBelowHeld) {
					t.Errorf("error %v is not ErrBelowHeld", err)
				}
			} else if err != nil {
				t.Fatalf("SetTotal(%d): %v", tc.to, err)
			}
			if a.Total != tc.total {
				t.Errorf("total %d, want %d", a.Total, tc.total)
			}
			var got []string
			for _, r := range plan.Releases {
				if r.To != "" || r.Spread {
					t.Errorf("release %+v is not to the pool", r)
				}
				got = append(got, r.Region+":"+strconv.FormatInt(r.Units, 10))
			}
			if strings.Join(got, " ") != tc.releases || len(plan.Grants) > 0 {
				t.Errorf("plan %+v, want releases %q", plan, tc.releases)
			}
			for n, r := range a.Regions {
				if b := before.Regions[n]; r.Granted != b.Granted || r.Released != b.Released {
					t.Errorf("SetTotal changed region %s's counters", n)
				}
			}
			if err := a.Check(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSetTotalConverges plays the whole lowering: releases applied and
// acknowledged (each region frees what was asked), then SetTotal again
// finishes it, I2 holding at every step.
func TestSetTotalConverges(t *testing.T) {
	a := totalAlloc(t, map[string]int64{"us": 300, "eu": 200, "ap": 100}, map[string]*quota.Report{
		"us": {Sold: 250, Reserved: 10}, "eu": {Sold: 50}, "ap": {Sold: 100},
	})
	for round := 0; a.Total != 420; round++ {
		if round > 3 {
			t.Fatalf("not done after %d rounds: %+v", round, a)
		}
		plan, err := a.SetTotal(420)
		if err != nil {
			t.Fatal(err)
		}
		acts, err := a.Apply(plan)
		if err != nil {
			t.Fatal(err)
		}
		for _, rel := range acts.Releases {
			r := a.Regions[rel.Region]
			if _, err := a.AckRelease(rel.Region, rel.ID, r.Released+rel.Units); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Check(); err != nil {
			t.Fatal(err)
		}
	}
	if a.SumNet() != 420 || a.Unallocated() != 0 {
		t.Fatalf("after lowering: sum net %d unallocated %d", a.SumNet(), a.Unallocated())
	}
}
