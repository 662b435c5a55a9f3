package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redisproc"
	"flashsale/regional/redisstore"
)

// The durability group: the reserve script through the Batcher (no HTTP)
// under each durability mode (README "Durability"), side by side in one
// group, so the ratios between the rows are what each guarantee costs.
// `-only durability` runs just these rows.
const (
	rowDurFsync     = "durability_fsync"
	rowDurWait      = "durability_wait1"
	rowDurWaitFsync = "durability_wait1_fsync"
)

var durabilityRows = []string{rowDurFsync, rowDurWait, rowDurWaitFsync}

// durabilityGroup starts a single node with appendfsync always and two
// primary + replica pairs (the primary's appendfsync everysec, then
// always; replicas everysec; min-replicas-to-write 1), and returns the
// group's scenarios and what stops them.
func (e *env) durabilityGroup(ctx context.Context, workers int) (scs []scenario, stop func(), err error) {
	var stops []func()
	stop = onceAll(&stops)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	dir, err := os.MkdirTemp("", "bench-durability-")
	if err != nil {
		return nil, stop, fmt.Errorf("bench: temp dir: %w", err)
	}
	stops = append(stops, func() { _ = os.RemoveAll(dir) })
	start := func(name string, args ...string) (*redisproc.Proc, error) {
		p, err := redisproc.Start(ctx, redisproc.Options{Dir: filepath.Join(dir, name), Args: args})
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		stops = append(stops, func() { _ = p.Close() })
		return p, nil
	}
	// pair starts a primary with primaryFsync and its replica.
	pair := func(name, primaryFsync string) (*redisproc.Proc, error) {
		p, err := start(name+"-primary", "--appendfsync", primaryFsync, "--min-replicas-to-write", "1")
		if err != nil {
			return nil, err
		}
		host, port, _ := net.SplitHostPort(p.Addr)
		if _, err := start(name+"-replica", "--appendfsync", "everysec", "--replicaof", host, port); err != nil {
			return nil, err
		}
		return p, redisproc.WaitOnlineReplicas(ctx, p.Addr, 1)
	}
	rows := []struct {
		name, note string
		dur        redisstore.Durability
		node       func() (*redisproc.Proc, error)
	}{
		{rowDurFsync, "reserve via the Batcher: single node, appendfsync always (DurableFsync)",
			redisstore.Durability{Mode: redisstore.DurableFsync}, func() (*redisproc.Proc, error) { return start("single") }},
		{rowDurWait, "the same + WAIT 1 on the same connection: primary and replica appendfsync everysec (DurableWait)",
			redisstore.Durability{Mode: redisstore.DurableWait}, func() (*redisproc.Proc, error) { return pair("wait", "everysec") }},
		{rowDurWaitFsync, "the same + WAIT 1, primary appendfsync always (DurableWaitFsync)",
			redisstore.Durability{Mode: redisstore.DurableWaitFsync}, func() (*redisproc.Proc, error) { return pair("waitfsync", "always") }},
	}
	for _, r := range rows {
		if !e.wanted(r.name) {
			continue
		}
		node, err := r.node()
		if err != nil {
			return nil, stop, err
		}
		rdb := redis.NewClient(&redis.Options{Addr: node.Addr, PoolSize: workers + 16})
		stops = append(stops, func() { _ = rdb.Close() })
		store := redisstore.NewStore(rdb, "eu").WithDurability(r.dur)
		if err := store.Durability(ctx); err != nil {
			return nil, stop, fmt.Errorf("bench %s: %w", r.name, err)
		}
		// The setup's grant does not wait for the replica (a WAIT of 50 ms
		// can time out on a loaded machine before the replica caught up):
		// only the measured reserves do.
		if _, err := redisstore.NewStore(rdb, "eu").ApplyGrant(ctx, "bench-durability", 0, openStock); err != nil {
			return nil, stop, fmt.Errorf("bench %s: grant: %w", r.name, err)
		}
		b := redisstore.NewBatcher(store, redisstore.DefaultMaxBatch, redisstore.DefaultMaxInFlight)
		stops = append(stops, func() { _ = b.Close() })
		scs = append(scs, scenario{name: r.name, kind: "direct", op: reserveOp(b, "bench-durability"), note: r.note})
	}
	return scs, stop, nil
}
