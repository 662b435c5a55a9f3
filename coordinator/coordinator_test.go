package coordinator

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/internal/etcdtest"
	"flashsale/quota/layout"
)

func regions3() []*api.RegionSpec {
	return []*api.RegionSpec{{Name: "eu", Weight: 2}, {Name: "us", Weight: 1}, {Name: "ap", Weight: 1}}
}

func TestCreateSaleWritesInitialSplit(t *testing.T) {
	_, cli, c := startLeader(t)
	api1 := dial(t, c.Addr())
	ctx := authed(t.Context())

	got, err := api1.CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 1000, regions3()...)})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "active" || got.PerUserLimit != 1 {
		t.Fatalf("defaults not filled: %+v", got)
	}
	// DefaultPolicy splits 95% by weight (no demand seen before the
	// opening); the rest waits for the first region to run dry.
	a := waitSplit(t, cli, "s1")
	want := map[string]int64{"eu": 475, "us": 237, "ap": 238}
	for r, n := range want {
		if a.Regions[r].Granted != n || a.Regions[r].Released != 0 {
			t.Errorf("region %s: granted %d released %d, want %d granted", r, a.Regions[r].Granted, a.Regions[r].Released, n)
		}
	}
	if a.SumNet() != 950 || a.Policy == nil || a.Policy.SplitPercent != 95 {
		t.Errorf("sum net %d, policy %+v: want 950 granted and the policy stored", a.SumNet(), a.Policy)
	}

	sale, err := api1.GetSale(ctx, &api.GetSaleRequest{Id: "s1"})
	if err != nil || sale.Total != 1000 || len(sale.Regions) != 3 {
		t.Fatalf("GetSale: %v %+v", err, sale)
	}
	list, err := api1.ListSales(ctx, &api.ListSalesRequest{})
	if err != nil || len(list.Sales) != 1 || list.Sales[0].Id != "s1" {
		t.Fatalf("ListSales: %v %+v", err, list)
	}
	st, err := api1.SaleStatus(ctx, &api.SaleRef{Id: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Open || st.Totals.Net != 950 || st.Unallocated != 50 || len(st.Regions) != 3 {
		t.Fatalf("status: %+v", st)
	}
	_, err = api1.CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 5, regions3()...)})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate sale: %v, want AlreadyExists", err)
	}
	if counterValue(c.m.writes.WithLabelValues("alloc")) < 1 || c.EtcdWrites() < 2 {
		t.Errorf("etcd write counter did not count the sale and its split: %d", c.EtcdWrites())
	}
}

func TestAuthAndInvalidArguments(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	c := startCoord(t, e)
	waitLeader(t, c)
	cl := dial(t, c.Addr())
	ctx := authed(t.Context())

	// Health is open; the API is not.
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hr, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", err, hr)
	}
	if _, err := cl.ListSales(t.Context(), &api.ListSalesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	bad := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer wrong")
	if _, err := cl.CreateSale(bad, &api.CreateSaleRequest{Sale: testSale("x", 10, regions3()...)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong token: %v, want Unauthenticated", err)
	}

	mut := func(f func(s *api.Sale)) *api.Sale {
		s := testSale("ok", 100, regions3()...)
		f(s)
		return s
	}
	cases := []struct {
		sale  *api.Sale
		field string
	}{
		{nil, "sale"},
		{mut(func(s *api.Sale) { s.Id = "a/b" }), "sale.id"},
		{mut(func(s *api.Sale) { s.Id = "{x}" }), "sale.id"},
		{mut(func(s *api.Sale) { s.Total = 0 }), "sale.total"},
		{mut(func(s *api.Sale) { s.PerUserLimit = -1 }), "sale.per_user_limit"},
		{mut(func(s *api.Sale) { s.StartsAt = nil }), "sale.starts_at"},
		{mut(func(s *api.Sale) { s.EndsAt = timestamppb.New(s.StartsAt.AsTime().Add(-time.Minute)) }), "sale.ends_at"},
		{mut(func(s *api.Sale) { s.Regions = nil }), "sale.regions"},
		{mut(func(s *api.Sale) {
			s.StartsAt = timestamppb.New(time.Now().Add(-2 * time.Hour))
			s.EndsAt = timestamppb.New(time.Now().Add(-time.Hour))
		}), "sale.ends_at"},
		{mut(func(s *api.Sale) { s.Regions[1].Name = "eu" }), "sale.regions[1].name"},
		{mut(func(s *api.Sale) { s.Regions[2].Weight = -3 }), "sale.regions[2].weight"},
		{mut(func(s *api.Sale) { s.Regions[0].Min, s.Regions[0].Max = 10, 5 }), "sale.regions[0].max"},
		{mut(func(s *api.Sale) { s.Regions[0].Min = 101 }), "sale.regions"},
		{mut(func(s *api.Sale) { s.State = "ended" }), "sale.state"},
	}
	for _, tc := range cases {
		_, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: tc.sale})
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("field %s: got %v, want InvalidArgument naming it", tc.field, err)
		}
	}
	if resp, _ := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Sales(), clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 0 {
		t.Fatalf("%d sales stored after only bad requests", resp.Count)
	}

	if _, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 100, regions3()...)}); err != nil {
		t.Fatal(err)
	}
	split := waitSplit(t, cli, "s1")
	_, rev := readAlloc(t, cli, "s1")
	euNet, pool := split.Regions["eu"].Net(), split.Unallocated()
	moves := []struct {
		req  *api.MoveRequest
		code codes.Code
		msg  string
	}{
		{&api.MoveRequest{Sale: "s1", From: "eu", To: "us", Units: 0}, codes.InvalidArgument, "units:"},
		{&api.MoveRequest{Sale: "s1", From: "eu", To: "eu", Units: 1}, codes.InvalidArgument, "to:"},
		{&api.MoveRequest{Sale: "s1", From: "eu", To: "mars", Units: 1}, codes.InvalidArgument, "to:"},
		{&api.MoveRequest{Sale: "", From: "eu", To: "us", Units: 1}, codes.InvalidArgument, "sale:"},
		{&api.MoveRequest{Sale: "nope", From: "eu", To: "us", Units: 1}, codes.NotFound, ""},
		// Asking eu for one more than it holds is refused, not clipped.
		{&api.MoveRequest{Sale: "s1", From: "eu", To: "us", Units: euNet + 1}, codes.FailedPrecondition, "move"},
		// One more than the pool holds would pass the total.
		{&api.MoveRequest{Sale: "s1", From: "", To: "us", Units: pool + 1}, codes.FailedPrecondition, "refused: units:"},
	}
	for _, m := range moves {
		_, err := cl.Move(ctx, m.req)
		if status.Code(err) != m.code || !strings.HasPrefix(status.Convert(err).Message(), m.msg) {
			t.Errorf("move %+v: got %v, want %v %q", m.req, err, m.code, m.msg)
		}
	}
	if _, rev2 := readAlloc(t, cli, "s1"); rev2 != rev {
		t.Fatalf("a refused move changed the allocation (rev %d -> %d)", rev, rev2)
	}
	if _, err := cl.Drain(ctx, &api.DrainRequest{Region: "mars", Sale: "s1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("drain of unknown region: %v", err)
	}
	if _, err := cl.ApplyRebalance(ctx, &api.ApplyRebalanceRequest{Id: "s1", AllocRevision: rev + 1000}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("apply with stale revision: %v, want FailedPrecondition", err)
	}
}

// leaderLease returns the lease of the current election winner's key.
func leaderLease(t *testing.T, cli *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Leader(), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("no leader key: %v", err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestDeposedLeaderWriteIsRejected(t *testing.T) {
	e, cli, a := startLeader(t, quiet)
	b := startCoord(t, e, quiet)
	ctx := authed(t.Context())

	// A follower does not write; it says where the leader is.
	_, err := dial(t, b.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 100, regions3()...)})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "leader is at "+a.Addr()) {
		t.Fatalf("write on follower: %v, want Unavailable naming %s", err, a.Addr())
	}
	if _, err := dial(t, a.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 100, regions3()...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	// Followers serve reads.
	if st, err := dial(t, b.Addr()).SaleStatus(ctx, &api.SaleRef{Id: "s1"}); err != nil || st.Totals.Net != 95 {
		t.Fatalf("status from the follower: %v %+v", err, st)
	}

	oldFence, ok := a.currentFence()
	if !ok {
		t.Fatal("a lost leadership early")
	}
	// Take a's lease away behind its back, as an expiry during a long GC
	// pause or a partition would.
	if _, err := cli.Revoke(t.Context(), leaderLease(t, cli)); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, b)

	before, rev := readAlloc(t, cli, "s1")
	stolen := cloneAlloc(before)
	stolen.Regions["us"].Released++
	_, err = a.writeAlloc(t.Context(), oldFence, stolen, rev, nil)
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("deposed leader's write: %v, want ErrDeposed", err)
	}
	after, rev2 := readAlloc(t, cli, "s1")
	if rev2 != rev || after.Regions["us"].Released != before.Regions["us"].Released {
		t.Fatalf("deposed write changed etcd: rev %d -> %d", rev, rev2)
	}
	if counterValue(a.m.rejected.WithLabelValues("deposed")) < 1 {
		t.Error("rejected write not counted")
	}
	// The new leader writes fine, and the old one now answers as a follower.
	if _, err := dial(t, b.Addr()).PauseSale(ctx, &api.SaleRef{Id: "s1"}); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	waitFor(t, "old leader to step down", func() bool { return !a.IsLeader() })
	_, err = dial(t, a.Addr()).ResumeSale(ctx, &api.SaleRef{Id: "s1"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("write on deposed leader: %v, want Unavailable naming %s", err, b.Addr())
	}
}

func TestFailoverMidMoveNewLeaderContinues(t *testing.T) {
	e, cli, a := startLeader(t, quiet)
	b := startCoord(t, e, quiet)
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := dial(t, a.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 200, regions...)}); err != nil {
		t.Fatal(err)
	}
	eu.report("s1", layout.RegionReport{})
	us.report("s1", layout.RegionReport{})
	waitSplit(t, cli, "s1") // 95 and 95, 10 in the pool

	plan, err := dial(t, a.Addr()).Move(ctx, &api.MoveRequest{Sale: "s1", From: "eu", To: "us", Units: 40})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Applied || len(plan.Releases) != 1 {
		t.Fatalf("move plan: %+v", plan)
	}
	id := plan.Releases[0].Id
	// The leader dies between its release request and the region's ack.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, b)
	// The region executes the release (its Redis gave up 40) and acks.
	eu.report("s1", layout.RegionReport{ReleaseID: id, Report: quotaReport(95, 40)})
	waitFor(t, "new leader to apply the ack", func() bool {
		al, _ := readAlloc(t, cli, "s1")
		return al.Regions["eu"].Pending == nil
	})
	al, _ := readAlloc(t, cli, "s1")
	if al.Regions["eu"].Released != 40 || al.Regions["eu"].Net() != 55 || al.Regions["us"].Granted != 135 {
		t.Fatalf("after ack: eu %+v us %+v", *al.Regions["eu"], *al.Regions["us"])
	}
	if al.SumNet() != 190 {
		t.Fatalf("sum net %d, want 190 (no unit lost or doubled)", al.SumNet())
	}
	// The same ack seen again changes nothing.
	_, rev := readAlloc(t, cli, "s1")
	plan2, err := dial(t, b.Addr()).Move(ctx, &api.MoveRequest{Sale: "s1", From: "us", To: "eu", Units: 10})
	if err != nil {
		t.Fatal(err)
	}
	if plan2.Releases[0].Id == id {
		t.Fatalf("release id %s reused after failover", id)
	}
	al2, rev2 := readAlloc(t, cli, "s1")
	if rev2 == rev || al2.Regions["eu"].Released != 40 || al2.Regions["us"].Granted != 135 {
		t.Fatalf("replayed ack moved units again: eu %+v us %+v", *al2.Regions["eu"], *al2.Regions["us"])
	}
}

func TestNewRefusesBadConfigAndCloseIsIdempotent(t *testing.T) {
	var nilC *Coordinator
	if err := nilC.Close(); err != nil {
		t.Fatal(err)
	}
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	bad := DevConfig()
	if _, err := New(bad, cli, nil); err == nil || !strings.Contains(err.Error(), "Token") {
		t.Fatalf("no token: %v", err)
	}
	bad.Token, bad.Interval = "x", 0
	if _, err := New(bad, cli, nil); err == nil || !strings.Contains(err.Error(), "Interval") {
		t.Fatalf("zero interval: %v", err)
	}
	bad.Interval, bad.Policy.SplitPercent = time.Second, 101
	if _, err := New(bad, cli, nil); err == nil || !strings.Contains(err.Error(), "Policy") {
		t.Fatalf("bad policy: %v", err)
	}
	reg := prometheus.NewRegistry()
	cfg := DevConfig()
	cfg.Token = "x"
	if _, err := New(cfg, cli, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, cli, reg); err == nil {
		t.Fatal("second coordinator on one registry: want a registration error")
	}
	c := startCoord(t, e)
	waitLeader(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.IsLeader() {
		t.Fatal("closed coordinator still leads")
	}
	// No goroutine of the coordinator outlives Close.
	buf := make([]byte, 1<<20)
	if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "(*Coordinator)") {
		t.Fatalf("goroutines left after Close:\n%s", st)
	}
	// Close revoked the session: the leader key is gone at once.
	resp, err := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Leader(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("leader keys after Close: %v %d", err, resp.Count)
	}
}

// The leader crashes (its etcd connection just goes away, nothing is
// revoked) with a move pending: the follower takes over once the lease
// expires and completes the move from what etcd holds.
func TestLeaderCrashFollowerTakesOverAfterLease(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	startChecker(t, cli)
	ttl1 := func(c *Config) { c.SessionTTL = 1 }
	a := startCoord(t, e, quiet, ttl1)
	waitLeader(t, a)
	b := startCoord(t, e, quiet, ttl1)
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := dial(t, a.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 100, regions...)}); err != nil {
		t.Fatal(err)
	}
	eu.report("s1", layout.RegionReport{})
	us.report("s1", layout.RegionReport{})
	waitSplit(t, cli, "s1") // 48 and 47
	plan, err := dial(t, a.Addr()).Move(ctx, &api.MoveRequest{Sale: "s1", From: "us", To: "eu", Units: 30})
	if err != nil {
		t.Fatal(err)
	}
	lease := leaderLease(t, cli)
	_ = a.cli.Close() // the crash: no resign, no revoke
	waitLeader(t, b)
	if ttl, err := cli.TimeToLive(t.Context(), lease); err != nil || ttl.TTL > 0 {
		t.Fatalf("b leads while a's lease lives: %v %+v", err, ttl)
	}
	us.report("s1", layout.RegionReport{ReleaseID: plan.Releases[0].Id, Report: quotaReport(47, 30)})
	waitFor(t, "b to finish a's move", func() bool {
		al, _ := readAlloc(t, cli, "s1")
		return al.Regions["us"].Pending == nil
	})
	al, _ := readAlloc(t, cli, "s1")
	if al.Regions["eu"].Net() != 78 || al.Regions["us"].Net() != 17 || al.SumNet() != 95 {
		t.Fatalf("after takeover: eu %+v us %+v", *al.Regions["eu"], *al.Regions["us"])
	}
}
