package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/internal/etcdtest"
	"flashsale/internal/redistest"
	"flashsale/internal/testwait"
	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/gossip"
	"flashsale/regional/redisstore"
)

// waitFor polls cond until it holds; the generous limit only bounds a hung
// test, it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 20*time.Second, cond)
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// world is one etcd, the test playing the coordinator on it, and one Redis
// per region.
type world struct {
	t     *testing.T
	cli   *clientv3.Client
	keys  layout.Keys
	redis map[string]*redistest.Server
	rdb   map[string]*redis.Client
	store map[string]*redisstore.Store

	mu     sync.Mutex // held while the coordinator writes, so a checker sees one allocation
	allocs map[string]*quota.Allocation
}

func newWorld(t *testing.T, redisArgs []string, regions ...string) *world {
	e := etcdtest.Start(t)
	w := &world{
		t: t, cli: etcdtest.Client(t, e), keys: layout.Keys{Prefix: layout.DefaultPrefix},
		redis: map[string]*redistest.Server{}, rdb: map[string]*redis.Client{}, store: map[string]*redisstore.Store{},
		allocs: map[string]*quota.Allocation{},
	}
	for _, r := range regions {
		w.redis[r] = redistest.Start(t, redisArgs...)
		w.rdb[r] = w.redis[r].Client()
		w.store[r] = redisstore.NewStore(w.rdb[r], r)
	}
	return w
}

func (w *world) config(region string) Config {
	c := DevConfig()
	c.Region = region
	c.ID = fmt.Sprintf("%s-%d", region, time.Now().UnixNano())
	c.ReportInterval = 30 * time.Millisecond
	c.ReportRefresh = 500 * time.Millisecond
	c.RetryInterval = 50 * time.Millisecond
	c.Logger = slog.New(slog.NewTextHandler(testLogWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return c
}

// start builds and starts an agent, closed when the test ends.
func (w *world) start(cfg Config, hook func(ctx context.Context, sale, id string)) *Agent {
	w.t.Helper()
	a, err := New(cfg, w.cli, w.store[cfg.Region], prometheus.NewRegistry())
	if err != nil {
		w.t.Fatal(err)
	}
	a.testHookAfterRelease = hook
	if err := a.Start(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = a.Close() })
	return a
}

// update changes a sale's allocation and writes it, as the coordinator's
// leader would.
func (w *world) update(sale string, f func(a *quota.Allocation)) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.allocs[sale]
	f(a)
	if err := a.Check(); err != nil {
		w.t.Fatal(err)
	}
	w.putAlloc(a)
}

func (w *world) putAlloc(a *quota.Allocation) {
	w.t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.cli.Put(context.Background(), w.keys.Alloc(a.Sale), string(b)); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) newSale(sale string, total int64, grants map[string]int64) {
	w.t.Helper()
	var regions []string
	for r := range grants {
		regions = append(regions, r)
	}
	a := quota.NewAllocation(sale, total, regions...)
	w.allocs[sale] = a
	w.update(sale, func(a *quota.Allocation) {
		for r, n := range grants {
			if err := a.Grant(r, n); err != nil {
				w.t.Fatal(err)
			}
		}
	})
}

func (w *world) counters(region, sale string) redisstore.Counters {
	w.t.Helper()
	c, err := w.store[region].Counters(context.Background(), sale)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) report(region, sale string) (layout.RegionReport, int64, bool) {
	w.t.Helper()
	resp, err := w.cli.Get(context.Background(), w.keys.Report(region, sale))
	if err != nil {
		w.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return layout.RegionReport{}, 0, false
	}
	var r layout.RegionReport
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		w.t.Fatal(err)
	}
	return r, resp.Kvs[0].Lease, true
}

func (w *world) waitReport(region, sale, what string, cond func(layout.RegionReport) bool) layout.RegionReport {
	w.t.Helper()
	var got layout.RegionReport
	waitFor(w.t, fmt.Sprintf("report %s/%s: %s", region, sale, what), func() bool {
		r, _, ok := w.report(region, sale)
		got = r
		return ok && cond(r)
	})
	return got
}

// ackPending plays the coordinator receiving a release ack: it waits for the
// region's report naming the pending release, then applies it.
func (w *world) ackPending(region, sale string) layout.RegionReport {
	w.t.Helper()
	w.mu.Lock()
	id := w.allocs[sale].Regions[region].Pending.ID
	w.mu.Unlock()
	rep := w.waitReport(region, sale, "ack of "+id, func(r layout.RegionReport) bool { return r.ReleaseID == id })
	w.update(sale, func(a *quota.Allocation) {
		if _, err := a.AckRelease(region, id, rep.ReleasedLocal); err != nil {
			w.t.Fatal(err)
		}
		r := rep.Report
		a.Regions[region].Report = &r
	})
	return rep
}

// caughtUp waits until region's Redis holds its latest granted_r.
func (w *world) caughtUp(region, sale string) {
	w.t.Helper()
	waitFor(w.t, region+" applied its grant", func() bool {
		w.mu.Lock()
		g := w.allocs[sale].Regions[region].Granted
		w.mu.Unlock()
		return w.counters(region, sale).GrantedSeen == g
	})
}

func hgetall(t *testing.T, rdb *redis.Client, key string) map[string]string {
	t.Helper()
	m, err := rdb.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sell reserves and confirms n units for distinct users.
func (w *world) sell(region, sale string, n int, tag string) {
	w.t.Helper()
	ctx := context.Background()
	// As a seller does: the seller epoch comes with the counters, once the
	// agent has reconciled the region's Redis (DESIGN §4.5).
	var c redisstore.Counters
	waitFor(w.t, "region "+region+" selling", func() bool {
		c = w.counters(region, sale)
		return c.Epoch > 0 && !c.Stopped()
	})
	for i := range n {
		res, err := w.store[region].Reserve(ctx, sale, redisstore.ReserveRequest{
			User: fmt.Sprintf("%s-u%d", tag, i), RequestID: fmt.Sprintf("%s-r%d", tag, i),
			Now: time.Now(), TTL: time.Minute, PerUserLimit: 1, Epoch: c.Epoch,
		})
		if err != nil {
			w.t.Fatal(err)
		}
		if res.Outcome != quota.Reserved {
			w.t.Fatalf("reserve %s/%s: %v", region, sale, res.Outcome)
		}
		if err := w.store[region].Confirm(ctx, sale, res.Reservation.ID, time.Now()); err != nil {
			w.t.Fatal(err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Region = "eu-west"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with a region: %v", err)
	}
	for name, f := range map[string]func(*Config){
		"Region":         func(c *Config) { c.Region = "" },
		"Region ":        func(c *Config) { c.Region = "eu/west" },
		"Prefix":         func(c *Config) { c.Prefix = "flashsale" },
		"SessionTTL":     func(c *Config) { c.SessionTTL = 0 },
		"ReportInterval": func(c *Config) { c.ReportInterval = 0 },
		"ReportRefresh":  func(c *Config) { c.ReportRefresh = time.Hour },
		"OpTimeout":      func(c *Config) { c.OpTimeout = 0 },
	} {
		c := good
		f(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(name)) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
	if _, err := New(good, nil, nil, nil); err == nil {
		t.Error("New with a nil etcd client: no error")
	}
	var a *Agent
	if err := a.Close(); err != nil {
		t.Errorf("Close on nil: %v", err)
	}
}

func TestGrantAppliedAndStaleGrantHarmless(t *testing.T) {
	w := newWorld(t, nil, "eu")
	cfg := w.config("eu")
	cfg.Endpoint, cfg.RedisAddr = "http://eu.example", w.redis["eu"].Addr
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a := w.start(cfg, nil)

	waitFor(t, "grant applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 100 })
	rep := w.waitReport("eu", "s1", "granted_seen 100", func(r layout.RegionReport) bool { return r.GrantedSeen == 100 && !r.Halted })
	if rep.Fence != a.Fence() || rep.Region != "eu" || rep.Sale != "s1" || rep.Halted {
		t.Errorf("report %+v, want region eu, sale s1, fence %d, not halted", rep, a.Fence())
	}
	if c := w.counters("eu", "s1"); c.Fence != a.Fence() {
		t.Errorf("redis fence %d, want the agent's election revision %d", c.Fence, a.Fence())
	}
	resp, err := w.cli.Get(context.Background(), w.keys.Region("eu"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("region info: %v %v", resp, err)
	}
	var info layout.RegionInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "eu" || info.Endpoint != "http://eu.example" || info.RedisAddr != w.redis["eu"].Addr || info.Fence != a.Fence() ||
		!info.Durable || !info.ScriptsLoaded || info.CheckedAt == 0 || resp.Kvs[0].Lease == 0 {
		t.Errorf("region info %+v lease %x", info, resp.Kvs[0].Lease)
	}

	// A grant raised, then a stale document (as a delayed or replayed
	// event would carry) and a repeat: the max-merge keeps the highest.
	w.update("s1", func(a *quota.Allocation) { _ = a.Grant("eu", 50) })
	waitFor(t, "grant 150 applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 150 })
	stale := quota.NewAllocation("s1", 1000, "eu")
	stale.Regions["eu"].Granted = 100
	w.putAlloc(stale)
	w.putAlloc(stale)
	// Watch events arrive in order: once a later sale is applied, the
	// stale ones were handled.
	w.newSale("marker", 10, map[string]int64{"eu": 7})
	waitFor(t, "marker applied", func() bool { return w.counters("eu", "marker").GrantedSeen == 7 })
	if c := w.counters("eu", "s1"); c.GrantedSeen != 150 || c.Ceiling() != 150 {
		t.Errorf("after stale grants: %+v, want granted_seen 150", c)
	}
}

func TestReleaseRunsOnceAndAcksCumulative(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a := w.start(w.config("eu"), nil)
	waitFor(t, "grant applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 100 })
	w.sell("eu", "s1", 10, "a")

	w.update("s1", func(a *quota.Allocation) { _, _ = a.RequestRelease("eu", 30, "") })
	rep := w.ackPending("eu", "s1")
	if rep.ReleasedLocal != 30 || rep.Sold != 10 {
		t.Errorf("ack %+v, want released_local 30 sold 10", rep)
	}
	// More than is left: m = available = 100 - 30 - 10.
	w.update("s1", func(a *quota.Allocation) { _, _ = a.RequestRelease("eu", 500, "") })
	id := w.allocs["s1"].Regions["eu"].Pending.ID
	rep = w.waitReport("eu", "s1", "second ack", func(r layout.RegionReport) bool { return r.ReleaseID == id })
	if rep.ReleasedLocal != 90 {
		t.Errorf("cumulative ack %d, want 90", rep.ReleasedLocal)
	}
	// The same pending request seen again (a repeated watch event) is not
	// run again.
	w.update("s1", func(*quota.Allocation) {})
	w.newSale("marker", 10, map[string]int64{"eu": 1})
	waitFor(t, "marker applied", func() bool { return w.counters("eu", "marker").GrantedSeen == 1 })
	c := w.counters("eu", "s1")
	if c.ReleasedLocal != 90 || c.Ceiling() != 10 || c.Available() != 0 {
		t.Errorf("counters %+v, want released_local 90, ceiling 10", c)
	}
	if got := hgetall(t, w.rdb["eu"], layout.SaleKey("s1", "releases")); len(got) != 2 || got["s1-1"] != "30" || got[id] != "60" {
		t.Errorf("releases %v, want s1-1=30 %s=60", got, id)
	}
	if n := value(a.m.releases); n != 2 {
		t.Errorf("release scripts run %v times, want 2", n)
	}
	w.ackPending("eu", "s1")
	if err := w.allocs["s1"].Check(); err != nil || w.allocs["s1"].Regions["eu"].Net() != 10 {
		t.Errorf("allocation %+v: %v", w.allocs["s1"].Regions["eu"], err)
	}
}

func TestReleaseKilledBeforeAckIsRerunAndAcked(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	ran := make(chan string, 1)
	first := w.start(w.config("eu"), func(ctx context.Context, sale, id string) {
		ran <- id
		<-ctx.Done() // killed here: the ack is never written
	})
	w.update("s1", func(a *quota.Allocation) { _, _ = a.RequestRelease("eu", 40, "") })
	id := <-ran
	if c := w.counters("eu", "s1"); c.ReleasedLocal != 40 {
		t.Fatalf("after the release script: %+v, want released_local 40", c)
	}
	oldFence := first.Fence()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if r, _, ok := w.report("eu", "s1"); ok && r.ReleaseID == id {
		t.Fatalf("the killed agent acknowledged %s: %+v", id, r)
	}

	second := w.start(w.config("eu"), nil)
	rep := w.waitReport("eu", "s1", "ack by the successor", func(r layout.RegionReport) bool { return r.ReleaseID == id })
	if rep.ReleasedLocal != 40 || rep.Fence != second.Fence() || rep.Fence <= oldFence {
		t.Errorf("ack %+v, want released_local 40 at fence %d > %d", rep, second.Fence(), oldFence)
	}
	if c := w.counters("eu", "s1"); c.ReleasedLocal != 40 || c.Fence != second.Fence() {
		t.Errorf("counters %+v: the release must count once", c)
	}
	if got := hgetall(t, w.rdb["eu"], layout.SaleKey("s1", "releases")); len(got) != 1 || got[id] != "40" {
		t.Errorf("releases %v, want only %s=40", got, id)
	}
	if n := value(second.m.releases); n != 1 {
		t.Errorf("successor ran the release script %v times, want 1 (the repeat)", n)
	}
	w.ackPending("eu", "s1")
	if r := w.allocs["s1"].Regions["eu"]; r.Released != 40 || r.Pending != nil {
		t.Errorf("allocation after ack: %+v", r)
	}
}

func TestOnlyLeaderActsAndDeposedAgentIsFenced(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	first := w.start(w.config("eu"), nil)
	waitFor(t, "first leads", first.Leader)
	w.waitReport("eu", "s1", "first's report", func(r layout.RegionReport) bool { return r.Fence == first.Fence() })
	second := w.start(w.config("eu"), nil)
	w.update("s1", func(a *quota.Allocation) { _ = a.Grant("eu", 20) })
	waitFor(t, "grant 120 applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 120 })
	if second.Leader() || value(second.m.terms) != 0 || value(second.m.grants) != 0 ||
		value(second.m.reportWrites) != 0 {
		t.Fatalf("the standby acted: leader=%v", second.Leader())
	}

	// Depose the first agent as an expired lease would.
	stale := first.lastTerm()
	if _, err := w.cli.Revoke(context.Background(), stale.sess.Lease()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second leads and claimed the fence", func() bool {
		return second.Leader() && w.counters("eu", "s1").Fence == second.Fence()
	})
	waitFor(t, "first stepped down", func() bool { return !first.Leader() })
	if second.Fence() <= stale.fence {
		t.Fatalf("fences: new %d, old %d", second.Fence(), stale.fence)
	}

	// The deposed term acts late, as on a delayed watch event: every Redis
	// write is refused by the fence and nothing changes.
	ledger, releases := layout.SaleKey("s1", "ledger"), layout.SaleKey("s1", "releases")
	before, beforeRel := hgetall(t, w.rdb["eu"], ledger), hgetall(t, w.rdb["eu"], releases)
	ctx := context.Background()
	for _, a := range []Action{
		{Kind: ApplyGrant, Granted: 900},
		{Kind: Release, Release: quota.ReleaseRequest{ID: "rogue-1", Region: "eu", Units: 50}},
		{Kind: RaiseFloor, ReleasedLocal: 100, Sold: 100},
		{Kind: SetHalted, Halted: true},
		{Kind: Resume, Epoch: 99, Primary: w.counters("eu", "s1").Primary},
		{Kind: SetView, View: redisstore.SaleView{Total: 1, At: 1}},
	} {
		a.Sale, a.Fence = "s1", stale.fence
		if r := stale.redis(ctx, a); !errors.Is(r.Err, quota.ErrStaleFence) {
			t.Errorf("%v by the deposed agent: %v, want a stale fence", a.Kind, r.Err)
		}
	}
	// A whole pass of a deposed term that has not noticed yet: its core
	// learns it from Redis's newer fence and stops there.
	rogue := quota.NewAllocation("s1", 1000, "eu")
	rogue.Regions["eu"].Granted = 900
	rogue.Regions["eu"].Pending = &quota.ReleaseRequest{ID: "rogue-2", Region: "eu", Units: 10}
	stale.core = NewCore(CoreConfig{Region: "eu", Fence: stale.fence, ReportRefresh: time.Second})
	if err := stale.step(ctx, Loaded{Now: time.Now(), Allocs: map[string]*quota.Allocation{"s1": rogue}}); !errors.Is(err, errDeposed) {
		t.Errorf("a pass of the deposed agent: %v", err)
	}
	rs := stale.do(ctx, []Action{{ID: 1, Kind: PutReport, Sale: "s1", Fence: stale.fence, Report: &layout.RegionReport{Region: "eu", Sale: "s1", Fence: stale.fence}}})
	if len(rs) != 1 || !rs[0].Deposed {
		t.Errorf("report by the deposed agent: %+v", rs)
	}
	after, afterRel := hgetall(t, w.rdb["eu"], ledger), hgetall(t, w.rdb["eu"], releases)
	if fmt.Sprint(before) != fmt.Sprint(after) || fmt.Sprint(beforeRel) != fmt.Sprint(afterRel) {
		t.Errorf("redis changed by the deposed agent:\n before %v %v\n after  %v %v", before, beforeRel, after, afterRel)
	}
	if r, _, _ := w.report("eu", "s1"); r.Fence != second.Fence() {
		t.Errorf("report %+v, want the new leader's fence %d", r, second.Fence())
	}
}

func TestStepsDownOnNewerFenceInRedis(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a := w.start(w.config("eu"), nil)
	waitFor(t, "fence claimed", func() bool { return a.Leader() && w.counters("eu", "s1").Fence == a.Fence() })
	old := a.Fence()
	// Someone with a newer fence wrote to this Redis: this agent must stop.
	if err := w.rdb["eu"].HSet(context.Background(), layout.SaleKey("s1", "ledger"), "fence", old+1).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "step down", func() bool { return value(a.m.stepDowns.WithLabelValues("deposed")) >= 1 })
	// It campaigns again and wins with a newer revision, which Redis accepts.
	waitFor(t, "re-elected with a newer fence", func() bool {
		f := a.Fence()
		return f > old+1 && w.counters("eu", "s1").Fence == f
	})
}

func TestReportVanishesWhenLeaseExpires(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a := w.start(w.config("eu"), nil)
	w.waitReport("eu", "s1", "first report", func(r layout.RegionReport) bool { return r.GrantedSeen == 100 })
	_, lease, _ := w.report("eu", "s1")
	if lease == 0 {
		t.Fatal("report not on a lease")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Close resigned at once, so a standby need not wait for the TTL.
	resp, err := w.cli.Get(context.Background(), w.keys.AgentElection("eu"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("election keys after Close: %v %v", resp.Kvs, err)
	}
	waitFor(t, "report and region info gone", func() bool {
		_, _, ok := w.report("eu", "s1")
		r, err := w.cli.Get(context.Background(), w.keys.Region("eu"))
		return err == nil && !ok && len(r.Kvs) == 0
	})
	ttl, err := w.cli.TimeToLive(context.Background(), clientv3.LeaseID(lease))
	if err != nil || ttl.TTL != -1 {
		t.Errorf("lease %x after expiry: %+v %v", lease, ttl, err)
	}
}

func TestReportsSkippedWhenUnchanged(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC).UnixMilli())
	var demandCalls atomic.Int64
	var demand atomic.Int64 // attempts/s
	cfg := w.config("eu")
	cfg.Now = func() time.Time { return time.UnixMilli(now.Load()) }
	cfg.Demand = func(string) float64 { demandCalls.Add(1); return float64(demand.Load()) }
	a := w.start(cfg, nil)
	w.waitReport("eu", "s1", "first report", func(r layout.RegionReport) bool { return r.GrantedSeen == 100 })

	// Every tick builds a report (and asks for demand); with the clock
	// frozen and nothing changed, none is written.
	// The metric counts after the commit, so the report may show first.
	// Two writes open the term: the new seller epoch (halted), recorded
	// before Redis gets it, then the region selling under it.
	waitFor(t, "first writes counted", func() bool { return value(a.m.reportWrites) == 2 })
	writes := value(a.m.reportWrites)
	calls := demandCalls.Load()
	waitFor(t, "20 quiet ticks", func() bool { return demandCalls.Load() >= calls+20 })
	if got := value(a.m.reportWrites); got != writes {
		t.Errorf("quiet ticks wrote %v reports", got-writes)
	}
	// The refresh interval passes: one write, with the new time.
	now.Add(cfg.ReportRefresh.Milliseconds())
	waitFor(t, "refresh write", func() bool { return value(a.m.reportWrites) == writes+1 })
	if r, _, _ := w.report("eu", "s1"); r.At != now.Load() {
		t.Errorf("refreshed report at %d, want %d", r.At, now.Load())
	}
	// A small change in demand alone waits for the refresh: 5/s wants 25
	// of the 100 eu holds.
	demand.Store(5)
	writes, calls = value(a.m.reportWrites), demandCalls.Load()
	waitFor(t, "20 ticks with more demand", func() bool { return demandCalls.Load() >= calls+20 })
	if got := value(a.m.reportWrites); got != writes {
		t.Errorf("a demand change that leaves the region well stocked wrote %v reports", got-writes)
	}
	// The region turning low is reported without waiting: 50/s wants 250
	// over the 5 s horizon, and 100 is less than half of that.
	demand.Store(50)
	rep := w.waitReport("eu", "s1", "demand 50", func(r layout.RegionReport) bool { return r.Demand == 50 })
	if rep.At != now.Load() {
		t.Errorf("low report at %d, want %d", rep.At, now.Load())
	}
}

// lostWritesScenario sells and releases in region eu, acknowledges, and
// returns the counters etcd then knows.
func lostWritesScenario(t *testing.T, w *world) layout.RegionReport {
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	waitFor(t, "grant applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 100 })
	w.sell("eu", "s1", 5, "a")
	w.update("s1", func(a *quota.Allocation) { _, _ = a.RequestRelease("eu", 30, "") })
	w.ackPending("eu", "s1")
	return w.waitReport("eu", "s1", "sold 5", func(r layout.RegionReport) bool { return r.Sold == 5 && r.ReleasedLocal == 30 })
}

// watchReports records every report put for region/sale from now on.
func watchReports(t *testing.T, w *world, region, sale string) func() []layout.RegionReport {
	resp, err := w.cli.Get(context.Background(), w.keys.Report(region, sale))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := w.cli.Watch(ctx, w.keys.Report(region, sale), clientv3.WithRev(resp.Header.Revision+1))
	var mu sync.Mutex
	var got []layout.RegionReport
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wr := range ch {
			for _, ev := range wr.Events {
				var r layout.RegionReport
				if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &r) == nil {
					mu.Lock()
					got = append(got, r)
					mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []layout.RegionReport {
		mu.Lock()
		defer mu.Unlock()
		return append([]layout.RegionReport(nil), got...)
	}
}

func checkRecovered(t *testing.T, w *world, a *Agent, reports []layout.RegionReport) {
	t.Helper()
	c := w.counters("eu", "s1")
	if c.Sold != 5 || c.ReleasedLocal != 30 || c.GrantedSeen != 100 || c.Halted || c.Fence != a.Fence() {
		t.Errorf("after reconciliation: %+v, want sold 5 released_local 30 granted_seen 100, not halted, fence %d", c, a.Fence())
	}
	if n := value(a.m.lostWrites); n != 1 {
		t.Errorf("lost writes detected %v times, want 1", n)
	}
	halted := false
	for _, r := range reports {
		halted = halted || r.Halted
		// A report never says less than etcd already knew.
		if r.Sold < 5 || r.ReleasedLocal < 30 || r.GrantedSeen < 100 {
			t.Errorf("report below the floor: %+v", r)
		}
	}
	if !halted {
		t.Errorf("no halted report among %d", len(reports))
	}
}

func TestLostWritesFlushall(t *testing.T) {
	w := newWorld(t, nil, "eu")
	a := w.start(w.config("eu"), nil)
	lostWritesScenario(t, w)
	reports := watchReports(t, w, "eu", "s1")
	if err := w.rdb["eu"].FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconciled", func() bool {
		c := w.counters("eu", "s1")
		return value(a.m.lostWrites) >= 1 && !c.Halted && c.Sold == 5
	})
	w.waitReport("eu", "s1", "resumed", func(r layout.RegionReport) bool { return !r.Halted })
	checkRecovered(t, w, a, reports())
	// Selling goes on from the reconciled ceiling: 100 - 30 - 5 left.
	if c := w.counters("eu", "s1"); c.Available() != 65 {
		t.Errorf("available %d, want 65", c.Available())
	}
}

func TestLostWritesRestartWithoutAOF(t *testing.T) {
	w := newWorld(t, []string{"--appendonly", "no"}, "eu")
	a := w.start(w.config("eu"), nil)
	lostWritesScenario(t, w)
	reports := watchReports(t, w, "eu", "s1")
	w.redis["eu"].Restart() // comes back empty
	waitFor(t, "reconciled", func() bool {
		c, err := w.store["eu"].Counters(context.Background(), "s1")
		return err == nil && value(a.m.lostWrites) >= 1 && !c.Halted && c.Sold == 5
	})
	w.waitReport("eu", "s1", "resumed", func(r layout.RegionReport) bool { return !r.Halted })
	checkRecovered(t, w, a, reports())
}

func TestLostWritesRestoredOlderCountersSeenAtStartup(t *testing.T) {
	w := newWorld(t, nil, "eu")
	cfg := w.config("eu")
	cfg.SessionTTL = 10 // the report must outlive the first agent until its successor reads it
	first := w.start(cfg, nil)
	lostWritesScenario(t, w)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Only the report on the first agent's lease knows what was sold.
	w.update("s1", func(a *quota.Allocation) { a.Regions["eu"].Report = nil })
	// With no agent running, Redis is restored from an older state: before
	// the sales and the release.
	ledger := layout.SaleKey("s1", "ledger")
	if err := w.rdb["eu"].HSet(context.Background(), ledger, "sold", 0, "released_local", 0).Err(); err != nil {
		t.Fatal(err)
	}
	reports := watchReports(t, w, "eu", "s1")
	second := w.start(w.config("eu"), nil)
	waitFor(t, "reconciled", func() bool {
		c := w.counters("eu", "s1")
		return value(second.m.lostWrites) >= 1 && !c.Halted && c.Sold == 5
	})
	w.waitReport("eu", "s1", "resumed", func(r layout.RegionReport) bool { return !r.Halted && r.Fence == second.Fence() })
	checkRecovered(t, w, second, reports())
}

func TestReleasedFloorFromAllocationWhenReportGone(t *testing.T) {
	w := newWorld(t, nil, "eu")
	first := w.start(w.config("eu"), nil)
	lostWritesScenario(t, w)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The report is gone (the lease expired) and the coordinator kept no
	// copy of it: only the durable Released is left.
	if _, err := w.cli.Delete(context.Background(), w.keys.Report("eu", "s1")); err != nil {
		t.Fatal(err)
	}
	w.update("s1", func(a *quota.Allocation) { a.Regions["eu"].Report = nil })
	if err := w.rdb["eu"].FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	second := w.start(w.config("eu"), nil)
	waitFor(t, "reconciled", func() bool {
		c := w.counters("eu", "s1")
		return value(second.m.lostWrites) >= 1 && !c.Halted && c.GrantedSeen == 100
	})
	c := w.counters("eu", "s1")
	net := w.allocs["s1"].Regions["eu"].Net()
	if c.ReleasedLocal != 30 || c.Ceiling() != net {
		t.Errorf("counters %+v: want released_local 30 and ceiling = net grant %d", c, net)
	}
}

func TestCeilingNeverAboveNetGrant(t *testing.T) {
	regions := []string{"eu", "us"}
	w := newWorld(t, nil, regions...)
	for _, r := range regions {
		w.start(w.config(r), nil)
	}
	w.newSale("s1", 1000, map[string]int64{"eu": 200, "us": 100})

	// The checker holds the coordinator's lock while it reads, so every
	// poll compares Redis with the one allocation etcd holds right then.
	stop := make(chan struct{})
	var polls atomic.Int64
	var violations []string
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			default:
			}
			w.mu.Lock()
			a := w.allocs["s1"]
			for _, r := range regions {
				c, err := w.store[r].Counters(ctx, "s1")
				if err != nil {
					violations = append(violations, err.Error())
					continue
				}
				if net := a.Regions[r].Net(); c.Ceiling() > net {
					violations = append(violations, fmt.Sprintf("I2: %s ceiling %d > net grant %d (%+v)", r, c.Ceiling(), net, c))
				}
			}
			if s := a.SumNet(); s > a.Total {
				violations = append(violations, fmt.Sprintf("I2: sum of net grants %d > total %d", s, a.Total))
			}
			w.mu.Unlock()
			polls.Add(1)
			time.Sleep(time.Millisecond)
		}
	})

	var ackTime time.Duration
	const steps = 6
	for i := range steps {
		from, to := regions[i%2], regions[(i+1)%2]
		w.caughtUp(from, "s1")
		w.sell(from, "s1", 3, fmt.Sprintf("step%d", i))
		w.update("s1", func(a *quota.Allocation) { _ = a.Grant(to, 25) })
		start := time.Now()
		w.update("s1", func(a *quota.Allocation) { _, _ = a.RequestRelease(from, 60, to) })
		w.ackPending(from, "s1")
		ackTime += time.Since(start)
	}
	for _, r := range regions {
		w.caughtUp(r, "s1")
	}
	close(stop)
	wg.Wait()
	if polls.Load() < 10 {
		t.Errorf("checker polled only %d times", polls.Load())
	}
	for _, v := range violations {
		t.Error(v)
	}
	a := w.allocs["s1"]
	for _, r := range regions {
		if c := w.counters(r, "s1"); c.Ceiling() != a.Regions[r].Net() {
			t.Errorf("%s settled at ceiling %d, net grant %d", r, c.Ceiling(), a.Regions[r].Net())
		}
	}
	t.Logf("release request to ack seen in etcd: %v on average over %d moves", ackTime/steps, steps)
	t.Logf("checker polls: %d; allocation: eu net %d, us net %d, unallocated %d",
		polls.Load(), a.Regions["eu"].Net(), a.Regions["us"].Net(), a.Unallocated())
}

func TestRedisDownThenBackWithoutFalseAlarm(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a := w.start(w.config("eu"), nil)
	w.waitReport("eu", "s1", "first report", func(r layout.RegionReport) bool { return r.GrantedSeen == 100 })
	fence := a.Fence()

	w.redis["eu"].Kill()
	errs := value(a.m.errors)
	waitFor(t, "a failed tick", func() bool { return value(a.m.errors) >= errs+1 })
	w.update("s1", func(a *quota.Allocation) { _ = a.Grant("eu", 50) })
	w.redis["eu"].Restart() // reloads its AOF: nothing lost

	w.waitReport("eu", "s1", "grant applied after the outage", func(r layout.RegionReport) bool { return r.GrantedSeen == 150 })
	if c := w.counters("eu", "s1"); c.GrantedSeen != 150 || c.Halted {
		t.Errorf("counters %+v", c)
	}
	if n := value(a.m.lostWrites); n != 0 {
		t.Errorf("a Redis that lost nothing was reconciled %v times", n)
	}
	if a.Fence() != fence || value(a.m.terms) != 1 {
		t.Errorf("the outage cost the leadership: fence %d -> %d, terms %v", fence, a.Fence(), value(a.m.terms))
	}
}

func TestLifecycle(t *testing.T) {
	w := newWorld(t, nil, "eu")
	w.newSale("s1", 1000, map[string]int64{"eu": 100})
	a, err := New(w.config("eu"), w.cli, w.store["eu"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err == nil {
		t.Error("second Start: no error")
	}
	waitFor(t, "grant applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 100 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if a.Leader() {
		t.Error("leader after Close")
	}
	if err := a.Start(context.Background()); err == nil {
		t.Error("Start after Close: no error")
	}
	// Nothing of the agent outlives Close.
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, frame := range []string{"agent.(*Agent).run", "agent.(*term)"} {
		if strings.Contains(stacks, frame) {
			t.Errorf("goroutine in %s still running after Close", frame)
		}
	}
	// A context ending stops it too.
	b, err := New(w.config("eu"), w.cli, w.store["eu"], nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b leads", b.Leader)
	cancel()
	<-b.done
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSaleViewFollowsOtherRegions: the agent copies the other regions'
// sold and reserved (their live reports) into its Redis, where sellers
// tell "this region is dry" from "the sale is sold out"; a region whose
// report vanished (its agent died) counts with the last report the
// allocation kept, so its sold units are not forgotten.
func TestSaleViewFollowsOtherRegions(t *testing.T) {
	w := newWorld(t, nil, "eu", "us")
	w.newSale("s1", 1000, map[string]int64{"eu": 100, "us": 200})
	w.start(w.config("eu"), nil)
	waitFor(t, "grant applied", func() bool { return w.counters("eu", "s1").GrantedSeen == 100 })
	view := func() redisstore.SaleView {
		v, err := w.store["eu"].View(context.Background(), "s1")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	waitFor(t, "a view with the total", func() bool { return view().Total == 1000 })
	if v := view(); v.OthersSold != 0 || v.OthersReserved != 0 || v.At == 0 {
		t.Fatalf("view before us reported: %+v", v)
	}
	b, _ := json.Marshal(layout.RegionReport{Region: "us", Sale: "s1", Report: quota.Report{Sold: 30, Reserved: 5, GrantedSeen: 200}})
	if _, err := w.cli.Put(context.Background(), w.keys.Report("us", "s1"), string(b)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "us's report in eu's view", func() bool { v := view(); return v.OthersSold == 30 && v.OthersReserved == 5 })
	// us's agent dies: its report goes; the allocation kept an older one.
	w.update("s1", func(a *quota.Allocation) { a.Regions["us"].Report = &quota.Report{Sold: 20, Reserved: 9} })
	if _, err := w.cli.Delete(context.Background(), w.keys.Report("us", "s1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stored report in eu's view", func() bool { v := view(); return v.OthersSold == 20 && v.OthersReserved == 9 })
}

// TestRegionInfoCarriesGossipMembers: the agent registers where its
// process gossips and the region's live sellers (real memberlist members
// on loopback), and rewrites them as sellers come and go.
func TestRegionInfoCarriesGossipMembers(t *testing.T) {
	w := newWorld(t, nil, "eu")
	member := func(name string, role gossip.Role, seeds ...string) *gossip.Node {
		n, err := gossip.Start(gossip.Config{Name: name, Region: "eu", Role: role, Preset: gossip.PresetLocal, Plaintext: true, Seeds: seeds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	own := member("seller-1", gossip.RoleSeller)
	cfg := w.config("eu")
	cfg.Membership = own
	w.start(cfg, nil)
	info := func() layout.RegionInfo {
		resp, err := w.cli.Get(context.Background(), w.keys.Region("eu"))
		if err != nil || len(resp.Kvs) == 0 {
			return layout.RegionInfo{}
		}
		ri, err := layout.DecodeRegion(resp.Kvs[0].Key, resp.Kvs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		return ri
	}
	sellers := func(want ...string) func() bool {
		return func() bool { return slices.Equal(info().Sellers, want) }
	}
	waitFor(t, "seller-1 registered", sellers("seller-1"))
	if got := info().Gossip; got != own.Addr() {
		t.Fatalf("registered gossip address %q, want %q", got, own.Addr())
	}
	other := member("seller-2", gossip.RoleSeller, own.Addr())
	member("agent-x", gossip.RoleAgent, own.Addr()) // a member, not a seller
	waitFor(t, "seller-2 registered", sellers("seller-1", "seller-2"))
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "seller-2 gone", sellers("seller-1"))
}
