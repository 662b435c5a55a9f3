package orders

import (
	"flashsale/quota/layout"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Config configures a Consumer.
type Config struct {
	Redis redis.UniversalClient // the region's Redis; required
	Store Store                 // required
	// Sales returns the sales whose streams to drain; it is polled every
	// SalesEvery, so sales may come and go. Required.
	Sales func() []string

	Group    string // consumer group; every seller of a region shares it
	Consumer string // this consumer's name in the group; unique per process

	BatchSize    int64         // entries per read and per SQL transaction
	Block        time.Duration // how long a read waits for new entries
	ClaimMinIdle time.Duration // pending entries idle this long belong to a dead consumer; also the lease length
	ClaimEvery   time.Duration // how often to look for such entries
	SalesEvery   time.Duration
	RetryMin     time.Duration // backoff after a Redis or SQL error, doubling...
	RetryMax     time.Duration // ...up to this

	Registerer prometheus.Registerer // nil: a private registry
	Logger     *slog.Logger          // nil: slog.Default()

	// afterCommit runs after a batch committed and before it is
	// acknowledged; a non-nil error stops that sale's loop without the ack,
	// as a crash there would. Tests only.
	afterCommit func(sale string, b Batch) error
}

// DefaultConfig is tuned for a production seller: batches of 500, reads
// blocking 1 s, entries of a consumer silent for 30 s taken over.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Group:        "orders-sql",
		Consumer:     host + "-" + strconv.Itoa(os.Getpid()),
		BatchSize:    500,
		Block:        time.Second,
		ClaimMinIdle: 30 * time.Second,
		ClaimEvery:   5 * time.Second,
		SalesEvery:   2 * time.Second,
		RetryMin:     100 * time.Millisecond,
		RetryMax:     5 * time.Second,
	}
}

func (c *Config) validate() error {
	switch {
	case c.Redis == nil:
		return errors.New("order consumer: Config.Redis is required")
	case c.Store == nil:
		return errors.New("order consumer: Config.Store is required")
	case c.Sales == nil:
		return errors.New("order consumer: Config.Sales is required")
	case c.Group == "" || c.Consumer == "":
		return fmt.Errorf("order consumer: Group (%q) and Consumer (%q) must be set", c.Group, c.Consumer)
	case c.BatchSize < 1 || c.BatchSize > 10_000:
		return fmt.Errorf("order consumer: BatchSize %d out of range 1..10000", c.BatchSize)
	case c.Block <= 0 || c.ClaimMinIdle <= 0 || c.ClaimEvery <= 0 || c.SalesEvery <= 0:
		return fmt.Errorf("order consumer: Block (%v), ClaimMinIdle (%v), ClaimEvery (%v), SalesEvery (%v) must be positive",
			c.Block, c.ClaimMinIdle, c.ClaimEvery, c.SalesEvery)
	case c.ClaimMinIdle < 3*c.Block:
		// The lease (ClaimMinIdle long) is renewed between reads.
		return fmt.Errorf("order consumer: ClaimMinIdle (%v) must be at least 3 x Block (%v)", c.ClaimMinIdle, c.Block)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("order consumer: need 0 < RetryMin (%v) <= RetryMax (%v)", c.RetryMin, c.RetryMax)
	}
	return nil
}

// Consumer drains every sale's order stream into the SQL store through a
// Redis consumer group: one loop per sale, each reading at most BatchSize
// entries, writing them in one transaction and only then acknowledging
// them. There is no queue between Redis and SQL: a slow or dead database
// just stops the reads (the stream is the buffer).
type Consumer struct {
	cfg Config
	m   *metrics
	log *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

// New checks cfg and registers the metrics; Start begins the work.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Consumer{cfg: cfg, m: m, log: log.With("component", "orders", "consumer", cfg.Consumer)}, nil
}

// Start launches the loops; they run until ctx ends or Close.
func (c *Consumer) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("order consumer: Start after Close")
	}
	if c.cancel != nil {
		return errors.New("order consumer: already started")
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.supervise(ctx)
	}()
	return nil
}

// Close stops the loops and waits for them. A batch already committed is
// still acknowledged. Safe to call twice and on nil.
func (c *Consumer) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	c.closed = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
	return nil
}

// supervise keeps one drain loop per listed sale.
func (c *Consumer) supervise(ctx context.Context) {
	loops := map[string]context.CancelFunc{}
	defer func() {
		for _, stop := range loops {
			stop()
		}
	}()
	t := time.NewTicker(c.cfg.SalesEvery)
	defer t.Stop()
	for {
		want := map[string]bool{}
		for _, s := range c.cfg.Sales() {
			want[s] = true
			if _, ok := loops[s]; ok {
				continue
			}
			lctx, stop := context.WithCancel(ctx)
			loops[s] = stop
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.drain(lctx, s)
			}()
		}
		for s, stop := range loops {
			if !want[s] {
				stop()
				delete(loops, s)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// drain is one sale's loop. Order of reads: first this consumer's own
// pending entries (left by a crash or a failed ack), then from time to time
// entries idle too long in dead consumers, otherwise new entries.
func (c *Consumer) drain(ctx context.Context, sale string) {
	stream := layout.StreamKey(sale)
	log := c.log.With("sale", sale)
	bo := c.backoff()
	ownPending := true
	claimCursor := "0-0"
	var lastClaim, lastLag time.Time
	groupReady := false
	l := c.newLease(sale)
	defer l.release()
	defer c.m.lag.DeleteLabelValues(sale) // another consumer reports it now
	for ctx.Err() == nil {
		if !l.hold(ctx) {
			// Another consumer drains this sale; it keeps the stream's
			// order.
			wait(ctx, c.cfg.Block)
			continue
		}
		if !groupReady {
			if err := c.ensureGroup(ctx, stream); err != nil {
				c.m.errs.WithLabelValues("redis").Inc()
				log.Warn("create consumer group", "err", err)
				bo.wait(ctx)
				continue
			}
			groupReady = true
		}
		var msgs []redis.XMessage
		var err error
		switch {
		case ownPending:
			msgs, err = c.read(ctx, stream, "0", -1)
			if err == nil && len(msgs) == 0 {
				ownPending = false
			}
		case time.Since(lastClaim) >= c.cfg.ClaimEvery:
			var next string
			msgs, next, err = c.cfg.Redis.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: c.cfg.Group, Consumer: c.cfg.Consumer,
				MinIdle: c.cfg.ClaimMinIdle, Start: claimCursor, Count: c.cfg.BatchSize,
			}).Result()
			if err == nil {
				claimCursor = next
				if next == "0-0" { // a full pass over the pending list is done
					lastClaim = time.Now()
				}
				if len(msgs) > 0 {
					log.Info("claimed entries of an idle consumer", "n", len(msgs))
				}
			}
		default:
			msgs, err = c.read(ctx, stream, ">", c.cfg.Block)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				log.Warn("order stream or group vanished (Redis lost data?); recreating the group", "err", err)
				groupReady = false
				continue
			}
			c.m.errs.WithLabelValues("redis").Inc()
			log.Warn("read order stream", "err", err)
			bo.wait(ctx)
			continue
		}
		bo.reset()
		if len(msgs) > 0 {
			acked, stop := c.process(ctx, log, l, sale, stream, msgs)
			if stop {
				return
			}
			if !acked {
				ownPending = true
			}
		}
		if time.Since(lastLag) >= 500*time.Millisecond || len(msgs) == 0 {
			c.updateLag(ctx, sale, stream)
			lastLag = time.Now()
		}
	}
}

func (c *Consumer) read(ctx context.Context, stream, from string, block time.Duration) ([]redis.XMessage, error) {
	res, err := c.cfg.Redis.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: c.cfg.Group, Consumer: c.cfg.Consumer,
		Streams: []string{stream, from}, Count: c.cfg.BatchSize, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil // the block timed out
	}
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, nil
	}
	return res[0].Messages, nil
}

func (c *Consumer) ensureGroup(ctx context.Context, stream string) error {
	// "0": a new group starts at the stream's first entry, so events written
	// before any consumer ran are not skipped.
	err := c.cfg.Redis.XGroupCreateMkStream(ctx, stream, c.cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("XGROUP CREATE %s %s: %w", stream, c.cfg.Group, err)
	}
	return nil
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// process writes msgs to SQL, retrying until it succeeds or ctx ends, then
// acknowledges them. It reports whether the ack went through and whether
// the loop must stop.
func (c *Consumer) process(ctx context.Context, log *slog.Logger, l *lease, sale, stream string, msgs []redis.XMessage) (acked, stop bool) {
	b, ids := toBatch(sale, msgs)
	bo := c.backoff()
	for {
		l.hold(ctx) // keep the lease through a long SQL outage
		start := time.Now()
		err := c.cfg.Store.Apply(ctx, b)
		if err == nil {
			c.m.batch.Observe(time.Since(start).Seconds())
			break
		}
		if ctx.Err() != nil {
			return false, true // not written, not acked: replayed after restart
		}
		c.m.errs.WithLabelValues("sql").Inc()
		log.Warn("write orders; will retry", "n", b.Len(), "err", err)
		bo.wait(ctx)
	}
	c.m.rows.WithLabelValues(sale).Add(float64(len(b.Events)))
	c.m.rejects.WithLabelValues(sale).Add(float64(len(b.Rejects)))
	for _, r := range b.Rejects {
		log.Error("order stream entry rejected", "entry", r.StreamID, "resv", r.Resv, "reason", r.Reason)
	}
	if c.cfg.afterCommit != nil {
		if err := c.cfg.afterCommit(sale, b); err != nil {
			l.until = time.Time{} // a crash does not release its lease either
			return false, true
		}
	}
	// The batch is committed: acknowledge it even when shutting down, or
	// the next start rewrites it (harmless, but wasted work).
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := c.cfg.Redis.XAck(actx, stream, c.cfg.Group, ids...).Err(); err != nil {
		c.m.errs.WithLabelValues("redis").Inc()
		log.Warn("ack order entries; they will be rewritten", "n", len(ids), "err", err)
		return false, ctx.Err() != nil
	}
	return true, ctx.Err() != nil
}

// toBatch parses entries; ones that cannot become rows become rejects so
// that they are recorded and acknowledged rather than retried forever.
func toBatch(sale string, msgs []redis.XMessage) (Batch, []string) {
	var b Batch
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ids = append(ids, m.ID)
		if m.Values == nil {
			continue // deleted from the stream while pending: nothing to write
		}
		e, err := ParseEvent(m.ID, m.Values)
		if err == nil && e.Sale != sale {
			err = fmt.Errorf("entry %s: sale %q in the stream of sale %q", m.ID, e.Sale, sale)
		}
		if err != nil {
			region, _ := m.Values["region"].(string)
			b.Rejects = append(b.Rejects, Reject{
				Sale: sale, Region: region, StreamID: m.ID, Resv: e.Resv, User: e.User, Type: e.Type,
				Reason: err.Error(), Fields: rawJSON(m.Values),
			})
			continue
		}
		b.Events = append(b.Events, e)
	}
	return b, ids
}

func (c *Consumer) updateLag(ctx context.Context, sale, stream string) {
	n, err := Lag(ctx, c.cfg.Redis, stream, c.cfg.Group)
	if err != nil {
		return // the gauge keeps its last value; read errors are counted elsewhere
	}
	c.m.lag.WithLabelValues(sale).Set(float64(n))
}

// Lag is the number of entries of stream that group has not acknowledged:
// never delivered plus delivered and pending.
func Lag(ctx context.Context, rdb redis.UniversalClient, stream, group string) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return 0, fmt.Errorf("XINFO GROUPS %s: %w", stream, err)
	}
	for _, g := range groups {
		if g.Name == group {
			if g.Lag < 0 {
				return 0, fmt.Errorf("XINFO GROUPS %s: lag of %s unknown", stream, group)
			}
			return g.Lag + g.Pending, nil
		}
	}
	return 0, fmt.Errorf("XINFO GROUPS %s: no group %s", stream, group)
}

// A lease gives one consumer of the group a sale's stream at a time, so
// the events of a sale are written in stream order (consumers sharing one
// stream would interleave batches and write a reservation's events out of
// order). It
// lasts ClaimMinIdle, the silence after which a consumer counts as dead
// and its pending entries are claimed anyway; it is renewed after a third
// of that. A lease is an efficiency and ordering aid, not a safety fence:
// if two consumers overlap, the idempotent upserts still converge.
type lease struct {
	rdb        redis.UniversalClient
	key, owner string
	ttl        time.Duration
	log        *slog.Logger
	until      time.Time // when our lease ends at the latest, by our clock
}

var (
	leaseAcquire = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`)
	leaseRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

func (c *Consumer) newLease(sale string) *lease {
	return &lease{
		rdb: c.cfg.Redis, key: layout.SaleKey(sale, "orders:"+c.cfg.Group+":owner"),
		owner: c.cfg.Consumer, ttl: c.cfg.ClaimMinIdle, log: c.log.With("sale", sale),
	}
}

// hold takes or renews the lease when needed and says whether we hold it.
func (l *lease) hold(ctx context.Context) bool {
	if time.Until(l.until) > l.ttl*2/3 {
		return true
	}
	start := time.Now()
	ok, err := leaseAcquire.Run(ctx, l.rdb, []string{l.key}, l.owner, l.ttl.Milliseconds()).Bool()
	if err != nil {
		// Cannot tell: act on what we knew; a read will fail the same way.
		return time.Now().Before(l.until)
	}
	if !ok {
		l.until = time.Time{}
		return false
	}
	if l.until.IsZero() {
		l.log.Info("took the order stream lease")
	}
	l.until = start.Add(l.ttl)
	return true
}

func (l *lease) release() {
	if l.until.IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = leaseRelease.Run(ctx, l.rdb, []string{l.key}, l.owner).Err()
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type backoff struct {
	min, max, cur time.Duration
}

func (c *Consumer) backoff() *backoff {
	return &backoff{min: c.cfg.RetryMin, max: c.cfg.RetryMax, cur: c.cfg.RetryMin}
}

func (b *backoff) reset() { b.cur = b.min }

func (b *backoff) wait(ctx context.Context) {
	wait(ctx, b.cur)
	b.cur = min(2*b.cur, b.max)
}
