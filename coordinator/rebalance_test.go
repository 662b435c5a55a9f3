package coordinator

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/internal/etcdtest"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// A busy region that runs low pulls at once: the pool, then the idle
// region's stock, released straight to it (a move, granted only on the
// ack); the checker sees Σ net <= total at every poll throughout.
func TestBusyRegionGetsQuotaFromIdleOne(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	polls := startChecker(t, cli)
	c := startCoord(t, e)
	waitLeader(t, c)
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := dial(t, c.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 1000, regions...)}); err != nil {
		t.Fatal(err)
	}
	split := waitSplit(t, cli, "s1") // 95%: 475 and 475, 50 in the pool
	if split.Regions["eu"].Net() != 475 || split.Regions["us"].Net() != 475 {
		t.Fatalf("split: eu %d us %d", split.Regions["eu"].Net(), split.Regions["us"].Net())
	}

	// eu sells fast: 465 gone, 200 attempts/s (1000 over the 5 s horizon,
	// more than the 535 left anywhere: the sale is scarce, and eu's share
	// of what is left is all of it); us sells nothing.
	shift := time.Now()
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475}})
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475, Sold: 465, Demand: 200}})
	var req *quota.ReleaseRequest
	waitFor(t, "the pool to eu and a release request from idle us", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		req = a.Regions["us"].Pending
		return req != nil
	})
	pull := time.Since(shift)
	a, _ := readAlloc(t, cli, "s1")
	if req.Units != 475 || req.To != "eu" || a.Regions["eu"].Net() != 525 || a.Unallocated() != 0 {
		t.Fatalf("release request %+v, eu net %d, pool %d: want us's 475 moved to eu, eu 525, pool 0", req, a.Regions["eu"].Net(), a.Unallocated())
	}

	// us runs the release script and acks; the freed units go to eu.
	us.report("s1", layout.RegionReport{ReleaseID: req.ID, Report: quota.Report{GrantedSeen: 475, ReleasedLocal: 475}})
	waitFor(t, "us's units to reach eu", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		return a.Regions["us"].Released == 475 && a.Regions["eu"].Net() == 1000
	})
	t.Logf("eu low -> pool granted and us asked to release: %v (loop interval %v); checker polls: %d; etcd writes: %v",
		pull, c.cfg.Interval, polls.Load(), counterValue(c.m.writes.WithLabelValues("alloc")))
}

// An operator plans, sees the plan, and applies exactly that plan by
// naming the allocation revision it was made from.
func TestPlanThenApplyRebalance(t *testing.T) {
	_, cli, c := startLeader(t)
	cl := dial(t, c.Addr())
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 1000, regions...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	// Paused, the loop leaves the sale to the operator.
	if _, err := cl.PauseSale(ctx, &api.SaleRef{Id: "s1"}); err != nil {
		t.Fatal(err)
	}
	// Both dry with equal demand: each gets its half of the pool (the
	// halves rounded up, as far as the pool goes).
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475, Sold: 475, Demand: 100}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475, Sold: 474, Demand: 100}})
	waitTicks(t, c, 3)
	if a, _ := readAlloc(t, cli, "s1"); a.Unallocated() != 50 {
		t.Fatalf("the loop planned a paused sale: pool %d", a.Unallocated())
	}
	plan, err := cl.PlanRebalance(ctx, &api.SaleRef{Id: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Applied || len(plan.Grants) != 2 || plan.Grants[0].Units != 26 || plan.Grants[1].Units != 24 {
		t.Fatalf("plan: %+v", plan)
	}
	if _, rev := readAlloc(t, cli, "s1"); rev != plan.AllocRevision {
		t.Fatalf("plan made from revision %d, etcd holds %d", plan.AllocRevision, rev)
	}
	got, err := cl.ApplyRebalance(ctx, &api.ApplyRebalanceRequest{Id: "s1", AllocRevision: plan.AllocRevision})
	if err != nil {
		t.Fatal(err)
	}
	a, rev := readAlloc(t, cli, "s1")
	if !got.Applied || got.AllocRevision != rev || a.Regions["eu"].Granted != 501 || a.Regions["us"].Granted != 499 {
		t.Fatalf("applied %+v; etcd rev %d eu %+v us %+v", got, rev, *a.Regions["eu"], *a.Regions["us"])
	}
	// Applying the old plan again is refused: the allocation moved on.
	if _, err := cl.ApplyRebalance(ctx, &api.ApplyRebalanceRequest{Id: "s1", AllocRevision: plan.AllocRevision}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale apply: %v", err)
	}
}

// Before the opening nothing moves but the split: however dry and busy the
// reports say a region is, no region is asked to release (nor granted from
// the pool) until the sale opens; then the same reports move quota at once.
func TestNothingMovesBeforeTheOpening(t *testing.T) {
	_, cli, c := startLeader(t, func(cfg *Config) { cfg.SplitLead = time.Hour })
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	sale := testSale("s1", 1000, regions...)
	opens := time.Now().Add(2 * time.Second)
	sale.StartsAt = timestamppb.New(opens)
	if _, err := dial(t, c.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: sale}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475, Sold: 475, Demand: 200}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475}})
	for time.Until(opens) > 5*c.cfg.Interval {
		time.Sleep(c.cfg.Interval)
		if a, _ := readAlloc(t, cli, "s1"); a.Regions["us"].Pending != nil || a.Unallocated() != 50 {
			t.Fatalf("quota moved before the opening: us %+v, pool %d", *a.Regions["us"], a.Unallocated())
		}
	}
	// Agents report at least once a second: after the opening (and, for
	// idle us, after the demand lag) the same figures are news.
	time.Sleep(time.Until(opens.Add(c.cfg.DemandLag + c.cfg.Interval)))
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475, Sold: 475, Demand: 200}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 475}})
	waitFor(t, "the opening to move quota to eu", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		return a.Regions["us"].Pending != nil && a.Unallocated() == 0
	})
}
