package coordinator

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"flashsale/coordinator/api"
	"flashsale/internal/etcdtest"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// waitTicks lets c's loop run n more iterations.
func waitTicks(t *testing.T, c *Coordinator, n float64) {
	t.Helper()
	start := counterValue(c.m.ticks)
	waitFor(t, "loop ticks", func() bool { return counterValue(c.m.ticks) >= start+n })
}

func TestDeadRegionKeepsItsQuota(t *testing.T) {
	_, cli, c := startLeader(t, quiet)
	cl := dial(t, c.Addr())
	ctx := authed(t.Context())
	eu, us := newFakeRegion(t, cli, "eu"), newFakeRegion(t, cli, "us")
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: testSale("s1", 100, regions...)}); err != nil {
		t.Fatal(err)
	}
	eu.report("s1", layout.RegionReport{})
	us.report("s1", layout.RegionReport{})
	waitSplit(t, cli, "s1") // 48 and 47, 5 in the pool
	rd, err := cl.Readiness(ctx, &api.ReadinessRequest{})
	if err != nil || !rd.Ready || rd.Leader != c.Addr() {
		t.Fatalf("readiness with both regions fresh: %v %+v", err, rd)
	}

	move, err := cl.Move(ctx, &api.MoveRequest{Sale: "s1", From: "eu", To: "us", Units: 20})
	if err != nil {
		t.Fatal(err)
	}
	eu.die() // its lease ends before it executes the release
	waitTicks(t, c, 10)

	a, _ := readAlloc(t, cli, "s1")
	if a.Regions["eu"].Net() != 48 || a.Regions["us"].Net() != 47 {
		t.Fatalf("dead region's quota moved: eu %+v us %+v", *a.Regions["eu"], *a.Regions["us"])
	}
	if p := a.Regions["eu"].Pending; p == nil || p.ID != move.Releases[0].Id {
		t.Fatalf("pending release to the dead region lost: %+v", p)
	}
	st, err := cl.SaleStatus(ctx, &api.SaleRef{Id: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Regions {
		if r.Region == "eu" && (r.Reported || r.Net != 48 || r.PendingReleaseId == "") {
			t.Errorf("status of dead eu: %+v", r)
		}
		if r.Region == "us" && (!r.Reported || !r.Fresh) {
			t.Errorf("status of live us: %+v", r)
		}
	}
	rd, err = cl.Readiness(ctx, &api.ReadinessRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Ready {
		t.Fatalf("ready with a dead region: %+v", rd)
	}
	var failed []string
	for _, ch := range rd.Checks {
		if !ch.Ok {
			failed = append(failed, ch.Name)
		}
	}
	if strings.Join(failed, " ") != "report/s1/eu agent/eu" {
		t.Fatalf("failed checks %v, want only report/s1/eu and agent/eu", failed)
	}

	// The region comes back with a new lease and acks the release it ran.
	eu2 := newFakeRegion(t, cli, "eu")
	eu2.report("s1", layout.RegionReport{ReleaseID: move.Releases[0].Id, Report: quotaReport(48, 20)})
	waitFor(t, "ack after return", func() bool { a, _ := readAlloc(t, cli, "s1"); return a.Regions["eu"].Pending == nil })
	a, _ = readAlloc(t, cli, "s1")
	if a.Regions["eu"].Net() != 28 || a.Regions["us"].Net() != 67 || a.SumNet() != 95 {
		t.Fatalf("after ack: eu %+v us %+v", *a.Regions["eu"], *a.Regions["us"])
	}
}

func TestNewLeaderLearnsBeforeGranting(t *testing.T) {
	e, cli, a := startLeader(t)
	b := startCoord(t, e, func(c *Config) { c.LearningGrace = 1 << 40 }) // only reports end it
	ctx := authed(t.Context())
	eu := newFakeRegion(t, cli, "eu")
	sale := testSale("s1", 100, &api.RegionSpec{Name: "eu"}, &api.RegionSpec{Name: "us"})
	sale.State = "paused"
	if _, err := dial(t, a.Addr()).CreateSale(ctx, &api.CreateSaleRequest{Sale: sale}); err != nil {
		t.Fatal(err)
	}
	eu.report("s1", layout.RegionReport{}) // before b's election: old news to b

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, b)
	if !b.isLearning() {
		t.Fatal("new leader not learning")
	}
	if _, err := dial(t, b.Addr()).ResumeSale(ctx, &api.SaleRef{Id: "s1"}); err != nil {
		t.Fatal(err)
	}
	waitTicks(t, b, 10)
	if al, _ := readAlloc(t, cli, "s1"); isSplit(al) {
		t.Fatalf("learning leader granted: %+v", al.Regions)
	}
	eu.report("s1", layout.RegionReport{}) // fresh: learning can end
	waitSplit(t, cli, "s1")
	if b.isLearning() {
		t.Fatal("still learning after every live region reported")
	}
}

func TestSaleLifecycle(t *testing.T) {
	_, cli, c := startLeader(t)
	cl := dial(t, c.Addr())
	ctx := authed(t.Context())
	sale := testSale("s1", 90, regions3()...)
	sale.State = "paused"
	if _, err := cl.CreateSale(ctx, &api.CreateSaleRequest{Sale: sale}); err != nil {
		t.Fatal(err)
	}
	waitTicks(t, c, 5)
	if al, _ := readAlloc(t, cli, "s1"); isSplit(al) {
		t.Fatal("paused sale was split")
	}
	if s, err := cl.ResumeSale(ctx, &api.SaleRef{Id: "s1"}); err != nil || s.State != "active" {
		t.Fatalf("resume: %v %v", err, s)
	}
	waitSplit(t, cli, "s1")

	before, _ := readAlloc(t, cli, "s1")
	dr, err := cl.Drain(ctx, &api.DrainRequest{Region: "ap"})
	if err != nil {
		t.Fatal(err)
	}
	if len(dr.Plans) != 1 || len(dr.Plans[0].Releases) != 1 || dr.Plans[0].Releases[0].Units != before.Regions["ap"].Net() {
		t.Fatalf("drain plan: %+v", dr.Plans)
	}
	if al, _ := readAlloc(t, cli, "s1"); al.Regions["ap"].Weight != 0 {
		t.Fatalf("drained region keeps weight %d", al.Regions["ap"].Weight)
	}
	// A second request while the release is pending is refused.
	if _, err := cl.Move(ctx, &api.MoveRequest{Sale: "s1", From: "ap", To: "eu", Units: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("move while a release is pending: %v", err)
	}
	if s, err := cl.EndSale(ctx, &api.SaleRef{Id: "s1"}); err != nil || s.State != "ended" {
		t.Fatalf("end: %v %v", err, s)
	}
	_, err = cl.ResumeSale(ctx, &api.SaleRef{Id: "s1"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ended") {
		t.Fatalf("resume ended sale: %v", err)
	}
	if _, err := cl.GetSale(ctx, &api.GetSaleRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown sale: %v", err)
	}
}

// The allocation's revision compare: a write based on an old read fails
// with ErrConflict (not ErrDeposed) and changes nothing.
func TestStaleAllocationWriteConflicts(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	c := startCoord(t, e)
	waitLeader(t, c)
	if _, err := dial(t, c.Addr()).CreateSale(authed(t.Context()), &api.CreateSaleRequest{Sale: testSale("s1", 10, regions3()...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	f, _ := c.currentFence()
	al, rev := readAlloc(t, cli, "s1")
	al.Regions["eu"].Released++
	_, err := c.writeAlloc(t.Context(), f, al, rev-1, nil)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale write: %v, want ErrConflict", err)
	}
	if _, rev2 := readAlloc(t, cli, "s1"); rev2 != rev {
		t.Fatal("stale write changed etcd")
	}
	if !c.IsLeader() {
		t.Fatal("a conflict deposed the leader")
	}
	// An allocation above the total is never written, whatever the fence.
	al.Regions["eu"].Released--
	al.Regions["eu"].Granted += al.Unallocated() + 1
	if _, err := c.writeAlloc(t.Context(), f, al, rev, nil); err == nil || !strings.Contains(err.Error(), "I2") {
		t.Fatalf("over-total write: %v, want an I2 refusal", err)
	}
}

// A region whose report lease really expires (no revoke: its keepalives
// just stop) is dead to the planners: while it reported dry it was topped
// up again and again; once its report is gone it gets nothing more, though
// its last report, stored in the allocation, still shows it dry; and its
// quota stays where it is.
func TestExpiredReportLeaseStopsGrants(t *testing.T) {
	_, cli, c := startLeader(t, func(c *Config) { c.Policy.SplitPercent = 50 }) // 250 each, 500 in the pool
	us := newFakeRegion(t, cli, "us")
	l, err := cli.Grant(t.Context(), 1) // never kept alive
	if err != nil {
		t.Fatal(err)
	}
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}}
	if _, err := dial(t, c.Addr()).CreateSale(authed(t.Context()), &api.CreateSaleRequest{Sale: testSale("s1", 1000, regions...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	us.report("s1", layout.RegionReport{Report: quotaReport(250, 0)})
	// eu sells every unit it gets (0.2 attempts/s: 1 over the horizon, so
	// each top-up is 1 unit) until its lease runs out.
	grants := 0
	for {
		a, _ := readAlloc(t, cli, "s1")
		net := a.Regions["eu"].Net()
		rep := layout.RegionReport{Region: "eu", Sale: "s1", Report: quota.Report{GrantedSeen: net, Sold: net, Demand: 0.2, At: time.Now().UnixMilli()}}
		b, _ := json.Marshal(rep)
		if _, err := cli.Put(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Report("eu", "s1"), string(b), clientv3.WithLease(l.ID)); err != nil {
			break // the lease is gone
		}
		gone := false
		waitFor(t, "a top-up of dry eu, or its lease to end", func() bool {
			a, _ := readAlloc(t, cli, "s1")
			resp, err := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Report("eu", "s1"))
			gone = err == nil && len(resp.Kvs) == 0
			return a.Regions["eu"].Net() > net || gone
		})
		if gone {
			break
		}
		grants++
	}
	if grants < 2 {
		t.Fatalf("dry eu was topped up %d times while alive, want several", grants)
	}
	waitTicks(t, c, 2) // a tick that read the report before it vanished may still write
	before, _ := readAlloc(t, cli, "s1")
	waitTicks(t, c, 10)
	after, _ := readAlloc(t, cli, "s1")
	if after.Regions["eu"].Granted != before.Regions["eu"].Granted || after.Unallocated() != before.Unallocated() || after.Unallocated() == 0 {
		t.Fatalf("dead eu still granted or the pool went elsewhere: eu %+v -> %+v, pool %d -> %d",
			*before.Regions["eu"], *after.Regions["eu"], before.Unallocated(), after.Unallocated())
	}
	if r := after.Regions["eu"].Report; r == nil || r.Sold == 0 {
		t.Fatalf("eu's last report left the allocation (agents use it as a floor): %+v", r)
	}
}

// An ack is written only while the report it came from is the one etcd
// holds (quota.Round.AckedRevs): a report overwritten since the read (an
// agent's retried put landing late) makes the write a conflict that
// changes nothing; read at the report's current revision, the same round
// lands the ack.
func TestAckFromOverwrittenReportConflicts(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	c := startCoord(t, e, quiet)
	waitLeader(t, c)
	if _, err := dial(t, c.Addr()).CreateSale(authed(t.Context()), &api.CreateSaleRequest{Sale: testSale("s1", 10, regions3()...)}); err != nil {
		t.Fatal(err)
	}
	waitSplit(t, cli, "s1")
	f, _ := c.currentFence()
	al, rev := readAlloc(t, cli, "s1")
	req, err := al.RequestRelease("eu", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.writeAlloc(t.Context(), f, al, rev, nil); err != nil {
		t.Fatal(err)
	}
	eu := newFakeRegion(t, cli, "eu")
	eu.report("s1", layout.RegionReport{Report: quotaReport(al.Regions["eu"].Granted, 0)}) // names no release: the loop acks nothing
	snap, err := c.readSnapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	held := snap.revs["s1"]["eu"]
	// What the leader had read before an older put overwrote it: the report
	// acknowledging the release.
	rep := snap.reports["s1"]["eu"]
	rep.ReleaseID, rep.ReleasedLocal = req.ID, req.Units
	snap.reports["s1"]["eu"] = rep
	snap.revs["s1"]["eu"] = held - 1

	if err := c.stepSale(t.Context(), f, snap, "s1", c.cfg.Now(), false); !errors.Is(err, ErrConflict) {
		t.Fatalf("ack from an overwritten report: %v, want ErrConflict", err)
	}
	if a, _ := readAlloc(t, cli, "s1"); a.Regions["eu"].Pending == nil || a.Regions["eu"].Released != 0 {
		t.Fatalf("the refused ack changed etcd: eu %+v", a.Regions["eu"])
	}
	snap.revs["s1"]["eu"] = held
	if err := c.stepSale(t.Context(), f, snap, "s1", c.cfg.Now(), false); err != nil {
		t.Fatalf("ack from the report etcd holds: %v", err)
	}
	if a, _ := readAlloc(t, cli, "s1"); a.Regions["eu"].Pending != nil || a.Regions["eu"].Released != req.Units {
		t.Fatalf("the ack did not land: eu %+v", a.Regions["eu"])
	}
}
