package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"flashsale/coordinator/api"
	"flashsale/quota/layout"
)

// Coordinator is one coordinator process: it campaigns for leadership,
// runs the rebalance loop while it leads, and serves the gRPC API either
// way (reads anywhere, writes on the leader only).
type Coordinator struct {
	cfg  Config
	cli  *clientv3.Client
	keys layout.Keys
	log  *slog.Logger
	m    *metrics

	mu   sync.Mutex
	lead *leadership // nil unless leading

	// allocMu serialises read-modify-write of allocations inside this
	// process (loop and API), so the revision compare only fails on a real
	// surprise, not on our own concurrent calls.
	allocMu sync.Mutex

	lis    net.Listener
	srv    *grpc.Server
	health *health.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

type leadership struct {
	fence      fence
	electedRev int64 // etcd revision when this leadership was known
	since      time.Time
	learning   bool
	cancel     context.CancelFunc
}

// New checks cfg and returns a coordinator that does nothing until Start.
// reg receives the metrics; nil keeps them unregistered.
func New(cfg Config, cli *clientv3.Client, reg prometheus.Registerer) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil {
		return nil, errors.New("coordinator: nil etcd client")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Coordinator{
		cfg:  cfg,
		cli:  cli,
		keys: layout.Keys{Prefix: cfg.Prefix},
		log:  cfg.Logger.With("component", "coordinator"),
		m:    m,
	}, nil
}

// Start listens for gRPC, then campaigns in the background. It returns once
// the API is served; leadership comes later (see IsLeader).
func (c *Coordinator) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", c.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("coordinator listen %s: %w", c.cfg.ListenAddr, err)
	}
	c.lis = lis
	if c.cfg.AdvertiseAddr == "" {
		c.cfg.AdvertiseAddr = lis.Addr().String()
	}
	c.srv = grpc.NewServer(
		grpc.ChainUnaryInterceptor(c.authInterceptor),
	)
	api.RegisterCoordinatorServer(c.srv, &server{c: c})
	c.health = health.NewServer()
	healthpb.RegisterHealthServer(c.srv, c.health)
	c.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	c.health.SetServingStatus(api.Coordinator_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		if err := c.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			c.log.Error("grpc serve", "err", err)
		}
	}()
	go func() {
		defer c.wg.Done()
		c.campaignLoop(ctx)
	}()
	c.log.Info("coordinator started", "grpc", c.cfg.AdvertiseAddr, "prefix", c.cfg.Prefix)
	return nil
}

// Addr is the gRPC address (valid after Start).
func (c *Coordinator) Addr() string { return c.cfg.AdvertiseAddr }

// Close stops leading (revoking the election lease, so a follower takes
// over at once), stops the API and waits for every goroutine. Safe twice
// and on nil.
func (c *Coordinator) Close() error {
	if c == nil {
		return nil
	}
	c.closed.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		if c.health != nil {
			c.health.Shutdown()
		}
		if c.srv != nil {
			done := make(chan struct{})
			go func() { c.srv.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				c.srv.Stop()
				<-done
			}
		}
		c.wg.Wait()
	})
	return nil
}

// IsLeader reports whether this coordinator currently leads.
func (c *Coordinator) IsLeader() bool {
	_, ok := c.currentFence()
	return ok
}

func (c *Coordinator) currentFence() (fence, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lead == nil {
		return fence{}, false
	}
	return c.lead.fence, true
}

// deposed is called when a fenced write found f gone: stop acting on it.
func (c *Coordinator) deposed(f fence) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lead != nil && c.lead.fence == f {
		c.log.Warn("deposed: leader fence no longer holds; stepping down", "key", f.key, "rev", f.rev)
		c.lead.cancel()
	}
}

// campaignLoop campaigns, leads until deposed or the session ends, and
// campaigns again, until ctx ends.
func (c *Coordinator) campaignLoop(ctx context.Context) {
	backoff := c.cfg.Interval
	for ctx.Err() == nil {
		err := c.leadOnce(ctx)
		if c.cli.Ctx().Err() != nil {
			// The etcd client was closed under us: nothing can succeed.
			c.log.Error("etcd client closed; not campaigning any more")
			return
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("leadership attempt ended", "err", err, "retryIn", backoff)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		// Back off while attempts keep failing (etcd down), up to a few
		// seconds; a clean term starts again from Interval.
		if err != nil {
			backoff = min(2*backoff, 5*time.Second)
		} else {
			backoff = c.cfg.Interval
		}
	}
}

func (c *Coordinator) leadOnce(ctx context.Context) error {
	// The session outlives ctx's cancellation just long enough for Close to
	// revoke its lease, so followers need not wait for the TTL.
	sess, err := concurrency.NewSession(c.cli,
		concurrency.WithTTL(c.cfg.SessionTTL),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer func() {
		if c.cli.Ctx().Err() != nil {
			sess.Orphan() // a closed client cannot revoke; the lease expires
			return
		}
		_ = sess.Close()
	}()

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done(): // the lease is gone: leadership (or the campaign) is over
			cancel()
		case <-cctx.Done():
		}
	}()

	el := concurrency.NewElection(sess, c.keys.Leader())
	if err := el.Campaign(cctx, c.cfg.AdvertiseAddr); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	f := fence{key: el.Key(), rev: el.Rev()}
	// Our key may have been created long before the previous leader left;
	// the revision we learn of our win at is what reports must be newer
	// than to count as news to this leader.
	resp, err := c.cli.Get(cctx, f.key)
	if err != nil {
		return fmt.Errorf("read own election key: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != f.rev {
		return fmt.Errorf("election key %s lost right after winning: %w", f.key, ErrDeposed)
	}
	c.mu.Lock()
	c.lead = &leadership{fence: f, electedRev: resp.Header.Revision, since: c.cfg.Now(), learning: true, cancel: cancel}
	c.mu.Unlock()
	c.m.leader.Set(1)
	c.m.learning.Set(1)
	c.log.Info("elected leader", "key", f.key, "rev", f.rev, "addr", c.cfg.AdvertiseAddr)

	c.runLoop(cctx, f)

	c.mu.Lock()
	c.lead = nil
	c.mu.Unlock()
	c.m.leader.Set(0)
	c.m.learning.Set(0)
	c.log.Info("no longer leader", "key", f.key, "rev", f.rev)
	return nil
}

// LeaderAddr is the gRPC address of the current leader, from etcd.
func (c *Coordinator) LeaderAddr(ctx context.Context) (string, error) {
	resp, err := c.cli.Get(ctx, c.keys.Leader(), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
