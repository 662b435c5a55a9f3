package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"

	"flashsale/regional/redisstore"
)

// Scenario is one row of the suite: a fault injected after the warm-up and
// healed FaultFor later, under the steady load.
type Scenario struct {
	Name string
	What string
	// Short puts it in the suite `make test` runs.
	Short bool
	// Negative marks a control: the checks must catch its fault (the row
	// is CAUGHT), or the suite fails (MISSED).
	Negative bool
	// Unsafe marks a measurement on an unsafe setting (no AOF,
	// asynchronous replication): acknowledged reservations may be lost,
	// and the row reports what was (MEASURED), failing only on an error.
	Unsafe bool
	// Region is the region the fault hits: the time to recover is from the
	// heal to its first reservation after it.
	Region string
	// Setup changes the deployment before it starts.
	Setup func(*Topology)
	// Fault injects the fault and returns how to heal it (nil: it stays).
	Fault func(context.Context, *Cluster) (heal func(context.Context) error, err error)
}

// Scenarios lists the suite.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "kill-seller", What: "kill -9 the us seller the buyers talk to; start it again", Short: true, Region: "us",
			Fault: func(_ context.Context, c *Cluster) (func(context.Context) error, error) {
				p := c.regions["us"].seller
				p.kill()
				return func(context.Context) error { return p.start() }, nil
			}},
		{Name: "kill-agent", What: "kill -9 the us agent (its lease runs out before a new one is elected); start it again", Region: "us",
			Fault: func(_ context.Context, c *Cluster) (func(context.Context) error, error) {
				p := c.regions["us"].agent
				p.kill()
				return func(context.Context) error { return p.start() }, nil
			}},
		{Name: "kill-coordinator-leader", What: "kill -9 the leading coordinator: the other takes over; start it again", Region: "us",
			Fault: func(_ context.Context, c *Cluster) (func(context.Context) error, error) {
				i := c.Leader()
				if i < 0 {
					return nil, errors.New("no coordinator leads")
				}
				p := c.coords[i]
				p.kill()
				return func(context.Context) error { return p.start() }, nil
			}},
		{Name: "kill-redis-aof", What: "kill -9 the us Redis (single node, AOF fsync always); restart it from its AOF", Short: true, Region: "us", Fault: killRedis},
		{Name: "latency-seller-redis", What: "300 ms on every answer from the us Redis to its seller (above the 150 ms Redis timeout)", Region: "us",
			Fault: toxic(func(c *Cluster) []*toxiproxy.Proxy { return one(c.regions["us"].sellerRedis) }, "latency", "downstream", `{"latency":300}`)},
		{Name: "blackhole-seller-redis", What: "black hole: the us Redis runs the seller's scripts but no answer comes back", Region: "us",
			Fault: toxic(func(c *Cluster) []*toxiproxy.Proxy { return one(c.regions["us"].sellerRedis) }, "timeout", "downstream", `{"timeout":0}`)},
		{Name: "latency-agent-etcd", What: "1 s each way between the us agent and every etcd member", Region: "us",
			Fault: toxic(func(c *Cluster) []*toxiproxy.Proxy { return c.regions["us"].agentEtcd }, "latency", "both", `{"latency":1000}`)},
		{Name: "blackhole-agent-etcd", What: "black hole between the us agent and every etcd member (its lease expires)", Region: "us",
			Fault: toxic(func(c *Cluster) []*toxiproxy.Proxy { return c.regions["us"].agentEtcd }, "timeout", "upstream", `{"timeout":0}`)},
		{Name: "latency-coordinator-etcd", What: "500 ms each way between both coordinators and every etcd member", Region: "us",
			Fault: toxic(func(c *Cluster) []*toxiproxy.Proxy {
				var ps []*toxiproxy.Proxy
				for _, cp := range c.coords {
					ps = append(ps, cp.etcd...)
				}
				return ps
			}, "latency", "both", `{"latency":500}`)},
		{Name: "blackhole-coordinator-etcd", What: "black hole between the leading coordinator and etcd: it loses its lease, the other leads", Region: "us",
			Fault: func(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
				i := c.Leader()
				if i < 0 {
					return nil, errors.New("no coordinator leads")
				}
				return toxic(func(c *Cluster) []*toxiproxy.Proxy { return c.coords[i].etcd }, "timeout", "upstream", `{"timeout":0}`)(ctx, c)
			}},
		{Name: "lose-etcd-member", What: "crash the etcd leader of three members; restart it from its data", Region: "us",
			Fault: func(_ context.Context, c *Cluster) (func(context.Context) error, error) {
				i := c.etcd.Leader()
				if i < 0 {
					return nil, errors.New("no etcd member leads")
				}
				c.etcd.Crash(i)
				return func(context.Context) error { return c.etcd.Restart(i) }, nil
			}},
		{Name: "clock-eu-behind", What: "the eu seller and agent read a clock 3 s behind (reports look stale to the coordinator)",
			Setup: func(t *Topology) { t.ClockOffset = map[string]time.Duration{"eu": -3 * time.Second} }},
		{Name: "clock-eu-ahead", What: "the eu seller and agent read a clock 3 s ahead",
			Setup: func(t *Topology) { t.ClockOffset = map[string]time.Duration{"eu": 3 * time.Second} }},

		// Replicated Redis under Sentinel (the safe setting: wait+fsync,
		// min-replicas-to-write 1, the seller epoch fence).
		{Name: "kill-redis-primary-replicated", What: "kill -9 the us Redis primary (primary + replica + 3 sentinels, wait+fsync): Sentinel promotes the replica; the old primary comes back as a replica", Region: "us",
			Setup: func(t *Topology) { t.HA = map[string]string{"us": "wait+fsync"} },
			Fault: func(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
				r := c.regions["us"]
				p, err := r.primary(ctx)
				if err != nil {
					return nil, err
				}
				p.Kill()
				if err := r.waitFailover(ctx, p.Addr, 30*time.Second); err != nil {
					return nil, err
				}
				return func(ctx context.Context) error { return waitRole(ctx, p.Addr, "slave", 30*time.Second) }, nil
			}},
		{Name: "sigstop-primary-past-failover", What: "SIGSTOP the us Redis primary (wait+fsync) until Sentinel promoted the replica, then SIGCONT it: a partitioned old primary", Short: true, Region: "us",
			Setup: func(t *Topology) { t.HA = map[string]string{"us": "wait+fsync"} }, Fault: partitionPrimary},
		{Name: "sigstop-primary-lagging-replica", What: "the partition after the replica fell 1.5 s behind (its stream black-holed), the agent stalled until the heal, wait+fsync: nothing acknowledged is only on the old primary", Region: "us",
			Setup: func(t *Topology) { t.HA = map[string]string{"us": "wait+fsync"} }, Fault: partitionLagging(1500 * time.Millisecond)},
		{Name: "sigstop-primary-async-replication", What: "the partition after the replica fell 1.5 s behind, the agent stalled, replication asynchronous (durability fsync, no WAIT), fence on: the unsafe setting, measured", Unsafe: true, Region: "us",
			Setup: func(t *Topology) { t.HA = map[string]string{"us": "fsync"} }, Fault: partitionLagging(1500 * time.Millisecond)},

		// Negative controls: one defence off each; the checks must fail.
		{Name: "negative-epoch-fence-off", What: "the partition after the replica fell 1.5 s behind, the agent stalled, asynchronous replication, seller epoch fence off (FLASHSALE_UNSAFE_NO_FENCE): must oversell or lose", Short: true, Negative: true, Region: "us",
			Setup: func(t *Topology) {
				t.HA = map[string]string{"us": "fsync"}
				t.Env = map[string][]string{"us": {redisstore.EnvUnsafeNoFence + "=1"}}
			}, Fault: partitionLagging(1500 * time.Millisecond)},
		// A Redis that restarts empty (no AOF: the unsafe setting). The
		// agent halts the region, restores every reservation the order
		// stream and the SQL order store know (orders.Restore), raises the
		// floors from etcd and sells again; what no witness saw is lost.
		{Name: "redis-restart-no-aof", What: "us Redis without AOF, kill -9 and restart empty: reconcile restores from the SQL order store (unsafe setting, measured)", Unsafe: true, Region: "us",
			Setup: func(t *Topology) { t.NoAOF = map[string]bool{"us": true} }, Fault: killRedis},
		// Reconcile from etcd floors only raises sold and released_local
		// but restores no reservation, per-user count or requestId (issue
		// 16 (b)): I3/I4 must break.
		{Name: "negative-restart-etcd-only", What: "the restart without AOF with reconcile from etcd floors only (FLASHSALE_UNSAFE_RECONCILE_ETCD_ONLY): must break I3/I4", Short: true, Negative: true, Region: "us",
			Setup: func(t *Topology) {
				t.NoAOF = map[string]bool{"us": true}
				t.Env = map[string][]string{"us": {redisstore.EnvUnsafeReconcileEtcdOnly + "=1"}}
			}, Fault: killRedis},
	}
}

// killRedis kills the us Redis (single node) with -9 and heals by
// starting it again on its data dir.
func killRedis(_ context.Context, c *Cluster) (func(context.Context) error, error) {
	r := c.regions["us"].redis
	r.Kill()
	return r.Restart, nil
}

// partitionPrimary stops the us primary (SIGSTOP: it keeps its
// connections and answers nothing) until Sentinel has promoted the
// replica, and heals by resuming it: it comes back believing it is the
// primary until Sentinel turns it into a replica.
func partitionPrimary(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	return partition(ctx, c, 0)
}

// partitionLagging is partitionPrimary after the replica fell lag behind
// (its replication stream held in a toxiproxy black hole while the
// primary goes on answering), with the region's agent stalled (SIGSTOP)
// from then until the heal.
func partitionLagging(lag time.Duration) func(context.Context, *Cluster) (func(context.Context) error, error) {
	return func(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
		return partition(ctx, c, lag)
	}
}

func partition(ctx context.Context, c *Cluster, lag time.Duration) (func(context.Context) error, error) {
	r := c.regions["us"]
	p, err := r.primary(ctx)
	if err != nil {
		return nil, err
	}
	healLag := func(context.Context) error { return nil }
	if lag > 0 {
		if healLag, err = c.lagReplica(ctx, r, p, lag); err != nil {
			return nil, err
		}
		// The agent stalls too, until the heal: the promoted replica, which
		// lost the last writes, waits that long for its reconcile.
		if err := r.agent.pause(); err != nil {
			return nil, errors.Join(err, healLag(ctx))
		}
		lagged := healLag
		healLag = func(ctx context.Context) error { return errors.Join(r.agent.resume(), lagged(ctx)) }
	}
	if err := p.Pause(); err != nil {
		return nil, err
	}
	if err := r.waitFailover(ctx, p.Addr, 30*time.Second); err != nil {
		_ = p.Resume()
		return nil, err
	}
	return func(ctx context.Context) error {
		if err := errors.Join(p.Resume(), healLag(ctx)); err != nil {
			return err
		}
		return waitRole(ctx, p.Addr, "slave", 30*time.Second)
	}, nil
}

func one(p *toxiproxy.Proxy) []*toxiproxy.Proxy { return []*toxiproxy.Proxy{p} }

// toxic adds a toxic of type kind to the proxies pick chooses, on stream
// (upstream, downstream or both), and heals by removing it.
func toxic(pick func(*Cluster) []*toxiproxy.Proxy, kind, stream, attrs string) func(context.Context, *Cluster) (func(context.Context) error, error) {
	return func(_ context.Context, c *Cluster) (func(context.Context) error, error) {
		streams := []string{stream}
		if stream == "both" {
			streams = []string{"upstream", "downstream"}
		}
		type added struct {
			p    *toxiproxy.Proxy
			name string
		}
		var done []added
		heal := func(ctx context.Context) error {
			var errs []error
			for _, a := range done {
				if err := a.p.Toxics.RemoveToxic(ctx, a.name); err != nil {
					errs = append(errs, fmt.Errorf("remove %s from %s: %w", a.name, a.p.Name, err))
				}
			}
			return errors.Join(errs...)
		}
		for _, p := range pick(c) {
			for _, s := range streams {
				name := "chaos_" + kind + "_" + s
				body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1.0,"attributes":%s}`, name, kind, s, attrs)
				if _, err := p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
					_ = heal(context.Background())
					return nil, fmt.Errorf("toxic %s on %s: %w", name, p.Name, err)
				}
				done = append(done, added{p, name})
			}
		}
		return heal, nil
	}
}

// Select returns the scenarios named (all when names is empty), or the
// short suite.
func Select(short bool, names []string) ([]Scenario, error) {
	all := Scenarios()
	if len(names) > 0 {
		var out []Scenario
		for _, n := range names {
			found := false
			for _, sc := range all {
				if sc.Name == n {
					out, found = append(out, sc), true
				}
			}
			if !found {
				return nil, fmt.Errorf("no scenario %q", n)
			}
		}
		return out, nil
	}
	if !short {
		return all, nil
	}
	var out []Scenario
	for _, sc := range all {
		if sc.Short {
			out = append(out, sc)
		}
	}
	return out, nil
}
