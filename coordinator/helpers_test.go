package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/internal/etcdembed"
	"flashsale/internal/etcdtest"
	"flashsale/internal/testwait"
	"flashsale/quota"
	"flashsale/quota/layout"
)

const testToken = "s3cret"

// startCoord starts a coordinator with its own etcd client on e.
func startCoord(t *testing.T, e *etcdembed.Etcd, mod ...func(*Config)) *Coordinator {
	t.Helper()
	cfg := DevConfig()
	cfg.Token = testToken
	cfg.Interval = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg, etcdtest.Client(t, e), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startLeader starts an embedded etcd, an invariant checker polling it and
// one coordinator, and waits until that coordinator leads.
func startLeader(t *testing.T, mod ...func(*Config)) (*etcdembed.Etcd, *clientv3.Client, *Coordinator) {
	t.Helper()
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	startChecker(t, cli)
	c := startCoord(t, e, mod...)
	waitLeader(t, c)
	return e, cli, c
}

// waitFor polls cond until it holds; the bound only stops a broken test
// from hanging, it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 20*time.Second, cond)
}

func waitLeader(t *testing.T, c *Coordinator) {
	t.Helper()
	waitFor(t, "leadership of "+c.Addr(), c.IsLeader)
}

// dial returns an API client of c's address carrying the test token.
func dial(t *testing.T, addr string) api.CoordinatorClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return api.NewCoordinatorClient(cc)
}

func authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
}

func testSale(id string, total int64, regions ...*api.RegionSpec) *api.Sale {
	now := time.Now()
	return &api.Sale{
		Id:       id,
		Total:    total,
		StartsAt: timestamppb.New(now.Add(-time.Second)),
		EndsAt:   timestamppb.New(now.Add(time.Hour)),
		Regions:  regions,
	}
}

func readAlloc(t *testing.T, cli *clientv3.Client, sale string) (*quota.Allocation, int64) {
	t.Helper()
	resp, err := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Alloc(sale))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatalf("no allocation for %s", sale)
	}
	a, err := layout.DecodeAlloc(resp.Kvs[0].Key, resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return a, resp.Kvs[0].ModRevision
}

// fakeRegion writes region reports the way an agent does: on its own lease.
type fakeRegion struct {
	t     *testing.T
	cli   *clientv3.Client
	name  string
	lease clientv3.LeaseID
}

func newFakeRegion(t *testing.T, cli *clientv3.Client, name string) *fakeRegion {
	t.Helper()
	l, err := cli.Grant(t.Context(), 30)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRegion{t: t, cli: cli, name: name, lease: l.ID}
	b, _ := json.Marshal(layout.RegionInfo{Name: name, Endpoint: "http://" + name + ".invalid", Fence: 1, Durable: true, ScriptsLoaded: true})
	if _, err := cli.Put(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Region(name), string(b), clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *fakeRegion) report(sale string, rep layout.RegionReport) {
	r.t.Helper()
	rep.Region, rep.Sale = r.name, sale
	if rep.At == 0 {
		rep.At = time.Now().UnixMilli()
	}
	b, _ := json.Marshal(rep)
	if _, err := r.cli.Put(r.t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Report(r.name, sale), string(b), clientv3.WithLease(r.lease)); err != nil {
		r.t.Fatal(err)
	}
}

// die ends the region's lease, as its expiry would.
func (r *fakeRegion) die() {
	r.t.Helper()
	if _, err := r.cli.Revoke(r.t.Context(), r.lease); err != nil {
		r.t.Fatal(err)
	}
}

// startChecker polls every allocation in etcd until the test ends and
// fails the test if any breaks I2 (Σ net <= total, counters sane) or if a
// region's granted or released counter ever goes down.
func startChecker(t *testing.T, cli *clientv3.Client) *atomic.Int64 {
	t.Helper()
	var polls atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := map[string]map[string]quota.RegionAlloc{}
		for ctx.Err() == nil {
			resp, err := cli.Get(ctx, layout.Keys{Prefix: layout.DefaultPrefix}.Allocs(), clientv3.WithPrefix())
			if err == nil {
				for _, kv := range resp.Kvs {
					a, err := layout.DecodeAlloc(kv.Key, kv.Value)
					if err != nil {
						t.Errorf("checker: %s: %v", kv.Key, err)
						continue
					}
					if err := a.Check(); err != nil {
						t.Errorf("checker: %s: %v", kv.Key, err)
					}
					prev := last[a.Sale]
					cur := map[string]quota.RegionAlloc{}
					for n, r := range a.Regions {
						if p, ok := prev[n]; ok && (r.Granted < p.Granted || r.Released < p.Released) {
							t.Errorf("checker: %s region %s counters went down: %+v -> %+v", a.Sale, n, p, *r)
						}
						cur[n] = *r
					}
					last[a.Sale] = cur
				}
				polls.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if polls.Load() == 0 {
			t.Error("checker never polled")
		}
	})
	return &polls
}

func quotaReport(grantedSeen, releasedLocal int64) quota.Report {
	return quota.Report{GrantedSeen: grantedSeen, ReleasedLocal: releasedLocal}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// quiet keeps the rebalancer from asking idle regions for releases, so a
// test's moves are the only releases.
func quiet(c *Config) { c.Policy.MinKeep = 1 << 40 }

// waitSplit waits for the sale's initial split and returns the allocation.
func waitSplit(t *testing.T, cli *clientv3.Client, sale string) *quota.Allocation {
	t.Helper()
	var a *quota.Allocation
	waitFor(t, "initial split of "+sale, func() bool {
		resp, err := cli.Get(t.Context(), layout.Keys{Prefix: layout.DefaultPrefix}.Alloc(sale))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		a, err = layout.DecodeAlloc(resp.Kvs[0].Key, resp.Kvs[0].Value)
		return err == nil && isSplit(a)
	})
	return a
}

// isSplit says whether the sale's initial split was made: any grant ever.
func isSplit(a *quota.Allocation) bool {
	for _, r := range a.Regions {
		if r.Granted > 0 {
			return true
		}
	}
	return false
}
