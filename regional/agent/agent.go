package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// errDeposed means this agent is no longer its region's leader: Redis holds
// a newer fence, or an etcd compare on the election key failed. The term
// ends at once; it is never retried blindly (STYLE §5).
var errDeposed = errors.New("region agent deposed")

// Agent is one candidate for its region's agent. Run one or more per region;
// only the elected one acts.
type Agent struct {
	cfg   Config
	keys  layout.Keys
	cli   *clientv3.Client
	store *redisstore.Store
	m     *metrics
	log   *slog.Logger

	fence atomic.Int64 // the current term's fence; 0 while not leading

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
	last    *term // the latest term, kept after it ends (tests drive a deposed term)

	// testHookAfterRelease, when set, runs after a release script succeeded
	// and before its ack is written: tests use it to kill the agent there.
	testHookAfterRelease func(ctx context.Context, sale, id string)
}

// New returns an agent for cfg.Region that drives store from the etcd
// behind cli. Metrics go to reg (nil: not registered).
func New(cfg Config, cli *clientv3.Client, store *redisstore.Store, reg prometheus.Registerer) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil {
		return nil, errors.New("region agent: nil etcd client")
	}
	if store == nil {
		return nil, errors.New("region agent: nil store")
	}
	cfg.fill()
	m, err := newMetrics(reg, cfg.Region)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, keys: layout.Keys{Prefix: cfg.Prefix}, cli: cli, store: store, m: m, log: cfg.Logger}, nil
}

// Start campaigns for the region in the background and, once elected, acts
// until ctx ends, Close is called, or the agent is deposed (then it
// campaigns again).
func (a *Agent) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.closed:
		return errors.New("region agent: start after close")
	case a.started:
		return errors.New("region agent: already started")
	}
	a.started = true
	ctx, a.cancel = context.WithCancel(ctx)
	a.done = make(chan struct{})
	go a.run(ctx)
	return nil
}

// Close stops the agent: it resigns so a standby takes over at once, and
// leaves its lease to expire, so its reports stay readable as floors until
// the successor overwrites them or the TTL passes. Safe twice and on nil.
func (a *Agent) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	a.closed = true
	cancel, done := a.cancel, a.done
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// Fence returns the fence of the term this agent leads, 0 when it does not
// lead.
func (a *Agent) Fence() int64 { return a.fence.Load() }

// Leader reports whether this agent currently leads its region.
func (a *Agent) Leader() bool { return a.fence.Load() != 0 }

func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	for {
		elected, err := a.runTerm(ctx)
		a.fence.Store(0)
		a.m.leader.Set(0)
		if elected {
			a.m.stepDowns.WithLabelValues(stepDownReason(ctx, err)).Inc()
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("region agent not leading; campaigning again", "elected", elected, "err", err, "retry", a.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.RetryInterval):
		}
	}
}

func stepDownReason(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil:
		return "closed"
	case errors.Is(err, errDeposed):
		return "deposed"
	case errors.Is(err, context.Canceled):
		return "session" // the session's context ended: the lease was lost
	}
	return "error"
}

// runTerm opens a session, campaigns, and leads until the session or ctx
// ends or the agent is deposed. elected says whether it led at all.
func (a *Agent) runTerm(ctx context.Context) (elected bool, err error) {
	sess, err := concurrency.NewSession(a.cli, concurrency.WithTTL(a.cfg.SessionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("open etcd session: %w", err)
	}
	// Orphan, not Close: revoking the lease would delete this term's
	// reports at once, and a successor must read them as lost-write floors.
	defer sess.Orphan()
	// The session's context ends with ctx or when the lease is lost, so
	// every call of the term stops with it.
	tctx := sess.Ctx()
	el := concurrency.NewElection(sess, a.keys.AgentElection(a.cfg.Region))
	if err := el.Campaign(tctx, a.cfg.ID); err != nil {
		return false, fmt.Errorf("campaign for region %s: %w", a.cfg.Region, err)
	}
	t := newTerm(a, sess, el.Key(), el.Rev())
	a.mu.Lock()
	a.last = t
	a.mu.Unlock()
	defer func() {
		// A resign lets a standby take over without waiting for the TTL;
		// when deposed its compare fails, harmlessly.
		rctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
		defer cancel()
		if err := el.Resign(rctx); err != nil {
			a.log.Warn("resign", "err", err)
		}
	}()
	a.m.terms.Inc()
	a.log.Info("region agent elected", "id", a.cfg.ID, "fence", t.fence)
	return true, t.run(tctx)
}

// lastTerm returns the latest term, for tests.
func (a *Agent) lastTerm() *term {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}
