package coordinator

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"flashsale/coordinator/api"
	"flashsale/internal/etcdtest"
	"flashsale/internal/layout"
	"flashsale/quota"
)

// A busy region gets quota from the pool in chunks, an idle one is asked to
// release its excess, and once it acks the busy one gets those units too;
// the checker sees Σ net <= total at every poll throughout.
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
	split := waitSplit(t, cli, "s1") // 400 and 400, 200 in the pool
	if split.Regions["eu"].Net() != 400 || split.Regions["us"].Net() != 400 {
		t.Fatalf("split: eu %d us %d", split.Regions["eu"].Net(), split.Regions["us"].Net())
	}

	// eu sells fast: 390 gone, 200 attempts/s (wants 1000 over the 5 s
	// horizon); us sells nothing.
	shift := time.Now()
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 390, Demand: 200}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400}})
	var firstGrant time.Duration
	waitFor(t, "a grant to eu", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		if a.Regions["eu"].Granted > 400 && firstGrant == 0 {
			firstGrant = time.Since(shift)
		}
		return a.Regions["eu"].Granted > 400
	})
	var req *quota.ReleaseRequest
	waitFor(t, "a release request to idle us", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		req = a.Regions["us"].Pending
		return req != nil
	})
	if req.Units != 380 || req.To != "" { // keeps one grant chunk (2% of 1000) for late buyers
		t.Fatalf("release request %+v, want 380 back to the pool", req)
	}
	waitFor(t, "the pool to drain into eu", func() bool { a, _ := readAlloc(t, cli, "s1"); return a.Unallocated() == 0 })
	if a, _ := readAlloc(t, cli, "s1"); a.Regions["eu"].Net() != 600 {
		t.Fatalf("eu net %d, want 600 (all of the pool)", a.Regions["eu"].Net())
	}

	// us runs the release script and acks; the freed units follow demand.
	us.report("s1", layout.RegionReport{ReleaseID: req.ID, Report: quota.Report{GrantedSeen: 400, ReleasedLocal: 380}})
	waitFor(t, "us's units to reach eu", func() bool {
		a, _ := readAlloc(t, cli, "s1")
		return a.Regions["us"].Released == 380 && a.Regions["eu"].Net() > 600
	})
	a, _ := readAlloc(t, cli, "s1")
	if a.SumNet() > a.Total || a.Regions["us"].Net() != 20 {
		t.Fatalf("after the move: eu %+v us %+v", *a.Regions["eu"], *a.Regions["us"])
	}
	t.Logf("demand shift -> first grant to the busy region: %v (loop interval %v); checker polls: %d; etcd writes: %v",
		firstGrant, c.cfg.Interval, polls.Load(), counterValue(c.m.writes.WithLabelValues("alloc")))
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
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 400, Demand: 100}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 399, Demand: 100}})
	waitTicks(t, c, 3)
	plan, err := cl.PlanRebalance(ctx, &api.SaleRef{Id: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Applied || len(plan.Grants) != 2 || plan.Grants[0].Units != 20 || plan.Grants[1].Units != 20 {
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
	if !got.Applied || got.AllocRevision != rev || a.Regions["eu"].Granted != 420 || a.Regions["us"].Granted != 420 {
		t.Fatalf("applied %+v; etcd rev %d eu %+v us %+v", got, rev, *a.Regions["eu"], *a.Regions["us"])
	}
	// Applying the old plan again is refused: the allocation moved on.
	if _, err := cl.ApplyRebalance(ctx, &api.ApplyRebalanceRequest{Id: "s1", AllocRevision: plan.AllocRevision}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale apply: %v", err)
	}
}

// During the opening grace the rebalancer grants from the pool but asks no
// region to release, however idle its reports say it is: at the opening
// second demand reports lag the burst. With no grace the same reports get
// the idle region asked to release (TestBusyRegionGetsQuotaFromIdleOne).
func TestOpeningGraceReleasesNothing(t *testing.T) {
	_, cli, c := startLeader(t, func(cfg *Config) { cfg.OpeningGrace = time.Hour })
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := dial(t, c.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 1000, regions...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	eu.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400, Sold: 390, Demand: 200}})
	us.report("s1", layout.RegionReport{Report: quota.Report{GrantedSeen: 400}})
	// Draining the pool into eu takes several loop ticks (chunks), each of
	// which would have asked us to release if the grace did not hold.
	waitFor(t, "the pool to drain into eu", func() bool { a, _ := readAlloc(t, cli, "s1"); return a.Unallocated() == 0 })
	for range 5 {
		time.Sleep(c.cfg.Interval)
		if a, _ := readAlloc(t, cli, "s1"); a.Regions["us"].Pending != nil || a.Regions["us"].Net() != 400 {
			t.Fatalf("idle us asked to release during the opening grace: %+v", *a.Regions["us"])
		}
	}
}
