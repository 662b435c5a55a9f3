package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// HAOptions shape a replicated Redis under Sentinel.
type HAOptions struct {
	Dir        string        // parent dir: node-0..n, sentinel-0..2 under it; required
	Replicas   int           // replicas of the primary; 0 means 1
	MasterName string        // Sentinel's name of the group; "" means "flashsale"
	DownAfter  time.Duration // Sentinel's down-after-milliseconds; 0 means 1 s
	// Args go to every data node (any may become the primary), e.g.
	// "--min-replicas-to-write", "1".
	Args      []string
	Supervise bool // restart crashed nodes and sentinels (the dev stack)
}

// HA is a primary, its replicas and three sentinels (quorum 2), each a
// child process on loopback. Which node is the primary changes with
// failovers: ask Primary.
type HA struct {
	MasterName string
	Nodes      []*Proc // Nodes[0] started as the primary
	Sentinels  []*Proc
}

// StartHA starts the nodes, waits until the replicas are in sync, then
// starts three sentinels monitoring the primary and waits until they see
// each other and every replica.
func StartHA(ctx context.Context, o HAOptions) (h *HA, err error) {
	if o.Dir == "" {
		return nil, errors.New("redisproc: HAOptions.Dir is required")
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MasterName == "" {
		o.MasterName = "flashsale"
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	h = &HA{MasterName: o.MasterName}
	defer func() {
		if err != nil {
			_ = h.Close()
			h = nil
		}
	}()
	// Ports first: a replica's StartArgs and the sentinels' config need them.
	ports := make([]int, o.Replicas+1)
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return h, err
		}
	}
	primary := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	for i, port := range ports {
		node := &Proc{}
		opts := Options{Dir: filepath.Join(o.Dir, "node-"+strconv.Itoa(i)), Port: port, Args: o.Args,
			Supervise: o.Supervise, RestartDelay: 4 * o.DownAfter}
		first := true
		opts.StartArgs = func() []string {
			// At the first start node 0 leads; after that (a restart after
			// a crash) whoever Sentinel says, so a restarted old primary
			// comes back as a replica instead of a second primary.
			lead := primary
			if !first {
				actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if a, err := h.primaryAddr(actx); err == nil {
					lead = a
				}
				cancel()
			}
			first = false
			if lead == node.Addr {
				return nil
			}
			host, port, _ := net.SplitHostPort(lead)
			return []string{"--replicaof", host, port}
		}
		node.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := startInto(ctx, node, opts); err != nil {
			return h, fmt.Errorf("redis node %d: %w", i, err)
		}
		h.Nodes = append(h.Nodes, node)
	}
	if err := waitFor(ctx, 20*time.Second, func(ctx context.Context) error { return h.replicasSynced(ctx, primary, o.Replicas) }); err != nil {
		return h, err
	}
	conf := fmt.Sprintf(`sentinel resolve-hostnames no
sentinel monitor %[1]s 127.0.0.1 %[2]d 2
sentinel down-after-milliseconds %[1]s %[3]d
sentinel failover-timeout %[1]s %[4]d
sentinel parallel-syncs %[1]s 1
`, o.MasterName, ports[0], o.DownAfter.Milliseconds(), 3*o.DownAfter.Milliseconds())
	for i := range 3 {
		s, err := Start(ctx, Options{Dir: filepath.Join(o.Dir, "sentinel-"+strconv.Itoa(i)), Sentinel: true, Conf: conf, Supervise: o.Supervise})
		if err != nil {
			return h, fmt.Errorf("sentinel %d: %w", i, err)
		}
		h.Sentinels = append(h.Sentinels, s)
	}
	return h, waitFor(ctx, 30*time.Second, h.sentinelsReady)
}

// startInto starts p (whose Addr is set) with opts.
func startInto(ctx context.Context, p *Proc, opts Options) error {
	p.Dir, p.opts = opts.Dir, opts
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("redis data dir: %w", err)
	}
	if err := p.start(ctx); err != nil {
		return err
	}
	if opts.Supervise {
		p.supervise()
	}
	return nil
}

// SentinelAddrs are the sentinels' addresses, for a failover client.
func (h *HA) SentinelAddrs() []string {
	out := make([]string, len(h.Sentinels))
	for i, s := range h.Sentinels {
		out[i] = s.Addr
	}
	return out
}

// primaryAddr asks the sentinels, in turn, for the primary's address.
func (h *HA) primaryAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, s := range h.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		a, err := sc.GetMasterAddrByName(ctx, h.MasterName).Result()
		_ = sc.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("no sentinel names the primary of %s: %w", h.MasterName, errors.Join(errs...))
}

// Primary is the node the sentinels name as the primary.
func (h *HA) Primary(ctx context.Context) (*Proc, error) {
	a, err := h.primaryAddr(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range h.Nodes {
		if n.Addr == a {
			return n, nil
		}
	}
	return nil, fmt.Errorf("sentinels name %s, not one of our nodes", a)
}

// Failover asks a sentinel to fail over now (SENTINEL FAILOVER) and waits
// until the sentinels name another primary that has every other node
// online as its replica.
func (h *HA) Failover(ctx context.Context) error {
	old, err := h.primaryAddr(ctx)
	if err != nil {
		return err
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: h.Sentinels[0].Addr})
	err = sc.Failover(ctx, h.MasterName).Err()
	_ = sc.Close()
	if err != nil {
		return fmt.Errorf("sentinel failover: %w", err)
	}
	return h.WaitNewPrimary(ctx, old)
}

// WaitNewPrimary waits (up to 30 s) until the sentinels name a primary
// other than old and it answers as one, with every other node online as
// its replica.
func (h *HA) WaitNewPrimary(ctx context.Context, old string) error {
	return waitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		a, err := h.primaryAddr(ctx)
		if err != nil {
			return err
		}
		if a == old {
			return fmt.Errorf("the sentinels still name %s", old)
		}
		return h.replicasSynced(ctx, a, len(h.Nodes)-1)
	})
}

// replicasSynced checks that addr is a primary with n online replicas.
func (h *HA) replicasSynced(ctx context.Context, addr string, n int) error {
	return onlineReplicas(ctx, addr, n)
}

func onlineReplicas(ctx context.Context, addr string, n int) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:master") {
		return fmt.Errorf("%s is not a primary", addr)
	}
	if got := strings.Count(info, "state=online"); got < n {
		return fmt.Errorf("%s has %d online replicas, want %d", addr, got, n)
	}
	return nil
}

// WaitOnlineReplicas waits (up to 20 s) until the server at primary is a
// primary with at least n replicas online (in sync).
func WaitOnlineReplicas(ctx context.Context, primary string, n int) error {
	return waitFor(ctx, 20*time.Second, func(ctx context.Context) error { return onlineReplicas(ctx, primary, n) })
}

// sentinelsReady checks that every sentinel knows the other two and every
// replica, so that a failover can be authorized.
func (h *HA) sentinelsReady(ctx context.Context) error {
	for _, s := range h.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		others, err1 := sc.Sentinels(ctx, h.MasterName).Result()
		replicas, err2 := sc.Replicas(ctx, h.MasterName).Result()
		_ = sc.Close()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if len(others) < len(h.Sentinels)-1 || len(replicas) < len(h.Nodes)-1 {
			return fmt.Errorf("sentinel %s sees %d sentinels and %d replicas", s.Addr, len(others), len(replicas))
		}
	}
	return nil
}

// Close stops the sentinels, then the nodes. Safe twice and on nil.
func (h *HA) Close() error {
	if h == nil {
		return nil
	}
	for _, s := range h.Sentinels {
		_ = s.Close()
	}
	for _, n := range h.Nodes {
		_ = n.Close()
	}
	return nil
}

func waitFor(ctx context.Context, within time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		err := check(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis HA not ready within %v: %w", within, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
