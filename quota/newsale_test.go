package quota_test

import (
	"testing"

	"flashsale/quota"
)

// A new sale's allocation carries its regions' weights and bounds and its
// policy, with nothing granted; the policy is its own copy.
func TestNewSale(t *testing.T) {
	p := quota.DefaultPolicy()
	a := quota.NewSale("s", 100, []quota.RegionBounds{{Name: "us", Weight: 2, Min: 5, Max: 60}, {Name: "eu", Weight: 1}}, p)
	us, eu := a.Regions["us"], a.Regions["eu"]
	if a.Total != 100 || us == nil || eu == nil || us.Weight != 2 || us.Min != 5 || us.Max != 60 || eu.Weight != 1 {
		t.Fatalf("allocation %+v us %+v eu %+v", a, us, eu)
	}
	if a.SumNet() != 0 || a.Unallocated() != 100 || a.PolicyOf() != p {
		t.Fatalf("sum net %d, unallocated %d, policy %+v", a.SumNet(), a.Unallocated(), a.PolicyOf())
	}
	p.SplitPercent = 1
	if a.PolicyOf().SplitPercent == 1 {
		t.Fatal("the allocation shares its policy with the caller")
	}
}
