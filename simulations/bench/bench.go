package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redisproc"
	"flashsale/regional"
	"flashsale/regional/redisstore"
	"flashsale/simulations/loadgen"

	"flashsale/internal/pgproc"
)

// Config says how long and how hard to run the baselines.
type Config struct {
	// Quick runs every scenario briefly (the whole run in under a minute).
	Quick bool
	// Duration of each scenario and the warmup left out of its figures;
	// zero picks 2.5 s / 0.5 s (quick) or 10 s / 2 s.
	Duration, Warmup time.Duration
	// Rounds cuts each scenario's time into slices run in turn with the
	// other scenarios of its group: more rounds, less drift between rows.
	Rounds int
	// Workers is the closed-loop concurrency of the throughput rows: enough
	// that every row runs at its saturation throughput (see README).
	Workers int
	// Rate is the open-loop arrival rate of the latency rows (the regional
	// seller against the global counter): equal offered load, well below
	// saturation, so the rows compare paths, not queues.
	Rate float64
	// Delays are the one-way delays to the global counter.
	Delays []time.Duration
	// InProcess serves the HTTP targets in this process, sharing its Go
	// scheduler and garbage collector with the generator (for profiling
	// them with it); by default each runs in a process of its own.
	InProcess bool
	// SkipPostgres leaves out the hot-row baseline.
	SkipPostgres bool
	// SkipGoodput leaves out the overload curve (up to 8,000 connections).
	SkipGoodput bool
	// GoodputConns, if set, are the curve's closed-loop connection counts
	// (for digging into one; the targets then read the largest).
	GoodputConns []int
	// GoodputOpen, if set, are the open-loop points' multiples of the
	// measured capacity; NoGoodputOpen leaves them out.
	GoodputOpen   []float64
	NoGoodputOpen bool
	// GoodputSamples, if set, is a directory that receives every goodput
	// point's attempts (goodput-POINT.tsv), for a time series.
	GoodputSamples string
	// SkipQuota leaves out group 5 (bursts and a steady sale on the whole
	// dev stack).
	SkipQuota bool
	// SkipGossip leaves out group 6 (gossip between a region's sellers).
	SkipGossip bool
	// Only, if set, runs just the named rows (for digging into one).
	Only []string
	// ResultsDir receives the JSON results ("" writes none).
	ResultsDir string
	// Out receives the table and ratio lines; Log the progress.
	Out io.Writer
	Log *slog.Logger
}

// QuickConfig and FullConfig are the presets of `make bench-quick` and
// `make bench`.
func QuickConfig() Config {
	return Config{Quick: true, Duration: 1600 * time.Millisecond, Warmup: 300 * time.Millisecond, Rounds: 6,
		Workers: 512, Rate: 300, Delays: []time.Duration{20 * time.Millisecond, 80 * time.Millisecond, 217 * time.Millisecond},
		ResultsDir: "results"}
}

// FullConfig is the longer run: steadier figures.
func FullConfig() Config {
	c := QuickConfig()
	c.Quick, c.Duration, c.Warmup, c.Rounds = false, 10*time.Second, 2*time.Second, 10
	return c
}

func (c *Config) check() error {
	switch {
	case c.Duration <= 0 || c.Warmup < 0 || c.Warmup >= c.Duration:
		return fmt.Errorf("bench: duration %v / warmup %v: want 0 <= warmup < duration", c.Duration, c.Warmup)
	case c.Rounds < 1 || c.Duration/time.Duration(c.Rounds) < 50*time.Millisecond:
		return fmt.Errorf("bench: %d rounds of %v: want at least one round of 50ms or more", c.Rounds, c.Duration)
	case c.Workers < 1 || c.Workers > 4096:
		return fmt.Errorf("bench: workers %d: want 1..4096", c.Workers)
	case c.Rate <= 0 || c.Rate > 100_000:
		return fmt.Errorf("bench: rate %v: want (0, 100000]", c.Rate)
	}
	for _, d := range c.Delays {
		if d <= 0 || d > 2*time.Second {
			return fmt.Errorf("bench: delay %v: want (0, 2s]", d)
		}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Row is one line of the table.
type Row struct {
	Name        string         `json:"name"`
	Kind        string         `json:"kind"` // http or direct (no HTTP: the store alone)
	Mode        string         `json:"mode"` // closed (throughput) or open (latency at a fixed rate)
	Throughput  float64        `json:"throughput"`
	P50         time.Duration  `json:"p50_ns"`
	P99         time.Duration  `json:"p99_ns"`
	P999        time.Duration  `json:"p999_ns"`
	Attempts    int            `json:"attempts"`
	Dropped     int            `json:"dropped,omitempty"`
	Outcomes    map[string]int `json:"outcomes"`
	RatioToBare float64        `json:"ratio_to_bare"`
	Note        string         `json:"note"`
}

// Ratio is one key ratio with the target it is held to.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"` // the ratio must be at least this
	Met    bool    `json:"met"`
}

// Results is the whole run, as written to results/.
type Results struct {
	Started  time.Time       `json:"started"`
	Quick    bool            `json:"quick"`
	Workers  int             `json:"workers"`
	Rate     float64         `json:"rate"`
	Duration time.Duration   `json:"duration_ns"`
	Rows     []Row           `json:"rows"`
	Ratios   []Ratio         `json:"ratios"`
	Verdict  loadgen.Verdict `json:"verdict"` // the seller's Redis after the run
	// GeneratorReserved is what the generator was told it reserved from
	// the seller; the verdict's held units must equal it.
	GeneratorReserved int `json:"generator_reserved"`
	// GeneratorUnknown is how many answers were outcome_unknown: each may
	// or may not hold a unit.
	GeneratorUnknown int `json:"generator_unknown"`
	// Goodput is the overload curve (row "goodput").
	Goodput *GoodputResults `json:"goodput,omitempty"`
	// Gossip is group 6 (row "gossip").
	Gossip *GossipResults `json:"gossip,omitempty"`
	// Quota is group 5 (row "quota"): bursts and a steady sale.
	Quota *QuotaResults `json:"quota,omitempty"`
}

// row finds a row by name.
func (r *Results) row(name string) *Row {
	for i := range r.Rows {
		if r.Rows[i].Name == name {
			return &r.Rows[i]
		}
	}
	return nil
}

type env struct {
	cfg    Config
	pop    *loadgen.Population
	signer *loadgen.Signer
	res    *Results
	seed   uint64
	visit  int // the next user's turn in the visiting order
}

// scenario is one row: an op driven closed-loop (rate 0) or open-loop.
type scenario struct {
	name, kind, note string
	rate             float64
	op               loadgen.Op
	countsReserved   bool // its reservations land in saleOpen: checked by the verifier
}

// Run starts redis-server (and PostgreSQL), runs every scenario, prints
// the table and the ratios and writes the JSON. It stops everything it
// started before returning.
//
// Rows that are compared run in one group, interleaved in rounds (a, b, c,
// a, b, c, ...) so that the drift of a shared machine hits them alike.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	const region = "eu"
	// Every attempt of the whole run is a different user: enough of them
	// for the longest run at the fastest rows.
	pop, err := loadgen.NewPopulation(50_000_000, []loadgen.RegionWeight{{Name: region, Weight: 1}}, 7)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	signer, err := loadgen.NewSigner(secret, time.Hour)
	if err != nil {
		return nil, err
	}
	e := &env{cfg: cfg, pop: pop, signer: signer, res: &Results{
		Started: time.Now().UTC(), Quick: cfg.Quick, Workers: cfg.Workers, Rate: cfg.Rate, Duration: cfg.Duration,
	}}
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	dir, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return nil, fmt.Errorf("bench: temp dir: %w", err)
	}
	closers = append(closers, func() { _ = os.RemoveAll(dir) })
	// The seller's production setting (DESIGN I4): every write fsynced.
	rp, err := redisproc.Start(ctx, redisproc.Options{Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	closers = append(closers, func() { _ = rp.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: rp.Addr, PoolSize: cfg.Workers + 16})
	closers = append(closers, func() { _ = rdb.Close() })

	// PostgreSQL's initdb takes seconds: start it now, alongside the
	// first group.
	type pgStart struct {
		pg  *pgproc.Proc
		err error
	}
	pgc := make(chan pgStart, 1)
	if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, "postgres_hot_row") {
		cfg.SkipPostgres = true
		e.cfg.SkipPostgres = true
	}
	if !cfg.SkipPostgres {
		go func() {
			pg, err := pgproc.Start(ctx, pgproc.Options{Database: "bench"})
			pgc <- pgStart{pg, err}
		}()
		closers = append(closers, func() {
			if s, ok := <-pgc; ok && s.pg != nil {
				_ = s.pg.Close()
			}
		})
	}

	bareURL, stopBare, err := e.target(ctx, targetSpec{Kind: "bare"}, dir)
	if err != nil {
		return nil, err
	}
	closers = append(closers, stopBare)
	sellerURL, stopSeller, err := e.target(ctx, targetSpec{Kind: "seller", Redis: rp.Addr, Pool: cfg.Workers + 16, Region: region, Secret: secret}, dir)
	if err != nil {
		return nil, err
	}
	stopSeller = sync.OnceFunc(stopSeller)
	closers = append(closers, stopSeller)

	// The same seller on a Redis that fsyncs once a second: what the
	// seller costs when the disk is not in the way (not a production
	// setting: a crash may lose a second of reservations).
	var weakURL string
	var weakStop []func() // once group 1 is done: its fsyncs must not disturb the later groups
	stopWeak := onceAll(&weakStop)
	closers = append(closers, stopWeak) // and on every early return
	if e.wanted("buy_before_sellout_everysec") {
		wdir, err := os.MkdirTemp("", "bench-redis-weak-")
		if err != nil {
			return nil, fmt.Errorf("bench: temp dir: %w", err)
		}
		weakStop = append(weakStop, func() { _ = os.RemoveAll(wdir) })
		wp, err := redisproc.Start(ctx, redisproc.Options{Dir: wdir, Args: []string{"--appendfsync", "everysec"}})
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		weakStop = append(weakStop, func() { _ = wp.Close() })
		u, stopWeakSeller, err := e.target(ctx, targetSpec{Kind: "seller", Redis: wp.Addr, Pool: cfg.Workers + 16, Region: region, Secret: secret, Weak: true}, dir)
		if err != nil {
			return nil, err
		}
		weakStop = append(weakStop, stopWeakSeller)
		weakURL = u
	}

	// Group 1, throughput through HTTP: the ceiling and the seller.
	bareOp, err := e.httpOp(bareURL, "bench-bare")
	if err != nil {
		return nil, err
	}
	beforeOp, err := e.httpOp(sellerURL, saleOpen)
	if err != nil {
		return nil, err
	}
	afterOp, err := e.httpOp(sellerURL, saleSoldOut)
	if err != nil {
		return nil, err
	}
	closers = append(closers, bareOp.Close, beforeOp.Close, afterOp.Close)
	group1 := []scenario{
		{name: "bare", kind: "http", op: bareOp, note: "Go HTTP handler decoding the buy JSON: the ceiling"},
		{name: "buy_before_sellout", kind: "http", op: beforeOp, countsReserved: true, note: "real seller: JWT, funnel, batched reserve script, AOF fsync always"},
	}
	if weakURL != "" {
		weakOp, err := e.httpOp(weakURL, saleOpen)
		if err != nil {
			return nil, err
		}
		weakStop = append(weakStop, weakOp.Close)
		group1 = append(group1, scenario{name: "buy_before_sellout_everysec", kind: "http", op: weakOp,
			note: "the same on a Redis with appendfsync everysec: the seller's cost without the disk"})
	}
	group1 = append(group1, scenario{name: "buy_after_sellout", kind: "http", op: afterOp, note: "real seller, sold out: answered from memory"})
	if err := e.group(ctx, group1); err != nil {
		return nil, err
	}
	stopWeak()

	// Group 2, store cost with no HTTP: the floor, the script, the script
	// batched, the PostgreSQL hot row.
	store := redisstore.NewStore(rdb, region)
	if _, err := store.ApplyGrant(ctx, "bench-direct", 0, openStock); err != nil {
		return nil, fmt.Errorf("bench: grant: %w", err)
	}
	batcher := redisstore.NewBatcher(store, redisstore.DefaultMaxBatch, redisstore.DefaultMaxInFlight)
	closers = append(closers, func() { _ = batcher.Close() })
	direct := []scenario{
		{name: "redis_incr", kind: "direct", op: incrOp(rdb, "bench:incr"), note: "bare INCR: the floor of any Redis counter"},
		{name: "redis_reserve_evalsha", kind: "direct", op: reserveOp(store, "bench-direct"), note: "reserve script, one EVALSHA per attempt"},
		{name: "redis_reserve_batcher", kind: "direct", op: reserveOp(batcher, "bench-direct"), note: "reserve script through the Batcher"},
	}
	var pgStop []func() // once group 2 is done: PostgreSQL's checkpoints must not disturb group 3
	stopPG := onceAll(&pgStop)
	closers = append(closers, stopPG) // and on every early return
	if !cfg.SkipPostgres {
		s := <-pgc
		close(pgc)
		if s.err != nil {
			return nil, fmt.Errorf("bench: %w (-skip-postgres runs without it)", s.err)
		}
		pgStop = append(pgStop, func() { _ = s.pg.Close() })
		// An application's pool, not one connection per worker: the
		// server allows 100.
		hot, err := newPGHotRow(ctx, s.pg.DSN, min(cfg.Workers, 64), openStock)
		if err != nil {
			return nil, err
		}
		pgStop = append(pgStop, hot.Close)
		direct = append(direct, scenario{name: "postgres_hot_row", kind: "direct", op: hot,
			note: "one row: SELECT ... FOR UPDATE, decrement, order row; fsync on"})
	}
	if err := e.group(ctx, direct); err != nil {
		return nil, err
	}
	stopPG()

	// Group 2b, what each durability mode costs: the Batcher's reserve
	// on a single fsyncing node, with WAIT 1 on a replica, and both.
	if slices.ContainsFunc(durabilityRows, e.wanted) {
		dur, stopDur, err := e.durabilityGroup(ctx, cfg.Workers)
		closers = append(closers, stopDur)
		if err != nil {
			return nil, err
		}
		if err := e.group(ctx, dur); err != nil {
			return nil, err
		}
		stopDur()
	}

	// Group 3, latency at equal offered load (open loop): the regional
	// design, whose buyer's Redis is local, against one global counter
	// across each delay.
	latency := []scenario{{name: "regional", kind: "http", rate: cfg.Rate, op: beforeOp, countsReserved: true,
		note: "real seller, buyer's region local"}}
	for _, d := range append([]time.Duration{0}, cfg.Delays...) {
		name := fmt.Sprintf("global_%dms", d.Milliseconds())
		if !e.wanted(name) {
			continue
		}
		op, closeFn, err := e.counter(ctx, rp.Addr, d, dir)
		if err != nil {
			return nil, err
		}
		closers = append(closers, closeFn)
		note := fmt.Sprintf("one global counter script across a %v one-way delay", d)
		if d == 0 {
			note = "the global counter handler with its Redis local"
		}
		latency = append(latency, scenario{name: name, kind: "http", rate: cfg.Rate, op: op, note: note})
	}
	if err := e.group(ctx, latency); err != nil {
		return nil, err
	}

	// Group 4, the seller under overload: the goodput curve.
	if e.wanted("goodput") && !e.cfg.SkipGoodput {
		// The store-bound reference (full runs): a second seller on the
		// same Redis behind a delay, so that its Redis path runs out
		// before the cores do.
		storeURL := ""
		if !cfg.Quick {
			px, err := NewDelayProxy(rp.Addr, storeBoundDelay)
			if err != nil {
				return nil, err
			}
			closers = append(closers, func() { _ = px.Close() })
			u, stop, err := e.target(ctx, targetSpec{Kind: "seller", Redis: px.Addr, Pool: cfg.Workers + 16, Region: region, Secret: secret}, dir)
			if err != nil {
				return nil, err
			}
			closers = append(closers, stop)
			storeURL = u
		}
		g, err := e.runGoodput(ctx, sellerURL, bareURL, storeURL, storeBoundDelay, rdb, region)
		if err != nil {
			return nil, err
		}
		e.res.Goodput = g
	}

	stopSeller()
	v, err := loadgen.Verify(ctx, []loadgen.RegionRedis{{Region: region, Client: rdb}}, saleOpen, openStock, 1)
	if err != nil {
		return nil, fmt.Errorf("bench: verify: %w", err)
	}
	if held := v.Sold + v.Reserved; held < int64(e.res.GeneratorReserved) || held > int64(e.res.GeneratorReserved+e.res.GeneratorUnknown) {
		v.Violations = append(v.Violations, fmt.Sprintf("the generator was told of %d reservations and %d unknown outcomes, Redis holds %d",
			e.res.GeneratorReserved, e.res.GeneratorUnknown, held))
	}
	e.res.Verdict = v

	// Group 5, quota where the buyers are: the whole dev stack, after the
	// single-seller groups so that it shares no core with them.
	if e.wanted("quota") && !e.cfg.SkipQuota {
		q, err := runQuota(ctx, e.cfg.Quick, e.cfg.Log)
		if err != nil {
			return nil, err
		}
		e.res.Quota = q
	}
	// Group 6, gossip between a region's sellers.
	if e.wanted("gossip") && !e.cfg.SkipGossip {
		g, err := runGossip(ctx, e.cfg.Quick)
		if err != nil {
			return nil, err
		}
		e.res.Gossip = g
	}
	e.finish()
	e.print()
	if err := e.write(); err != nil {
		return e.res, err
	}
	if !v.OK() {
		return e.res, fmt.Errorf("bench: invariant violated: %v", v.Violations)
	}
	return e.res, nil
}

// group warms every scenario up (figures discarded), then runs them in
// interleaved rounds and merges each one's slices into its row.
func (e *env) group(ctx context.Context, all []scenario) error {
	var scs []scenario
	for _, sc := range all {
		if e.wanted(sc.name) {
			scs = append(scs, sc)
		}
	}
	reps := make([][]*loadgen.Report, len(scs))
	slice := e.cfg.Duration / time.Duration(e.cfg.Rounds)
	for round := -1; round < e.cfg.Rounds; round++ {
		for i, sc := range scs {
			d := slice
			if round < 0 {
				if e.cfg.Warmup == 0 {
					continue
				}
				d = e.cfg.Warmup
			}
			e.cfg.Log.Info("bench: running", "scenario", sc.name, "round", round, "for", d)
			rep, err := loadgen.Run(ctx, e.plan(sc.rate, d), e.pop, sc.op, nil)
			if err != nil {
				return fmt.Errorf("bench %s: %w", sc.name, err)
			}
			e.visit = rep.NextVisit
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if sc.countsReserved {
				e.res.GeneratorReserved += rep.Reserved
				for _, smp := range rep.Samples {
					if smp.Outcome == regional.CodeOutcomeUnknown {
						e.res.GeneratorUnknown++
					}
				}
			}
			if round >= 0 {
				reps[i] = append(reps[i], rep)
			}
		}
	}
	for i, sc := range scs {
		rep := loadgen.Merge(reps[i]...)
		for msg, n := range rep.Errors {
			e.cfg.Log.Warn("bench: errors", "scenario", sc.name, "count", n, "err", msg)
		}
		e.add(sc.name, sc.kind, rep, sc.note)
	}
	return nil
}

// onceAll runs the functions *fs holds when it is first called, in
// reverse order, once, however often it is called: it can be registered
// before they are all added, so an early return stops what was started.
func onceAll(fs *[]func()) func() {
	return sync.OnceFunc(func() {
		for i := len(*fs) - 1; i >= 0; i-- {
			(*fs)[i]()
		}
	})
}

// wanted says whether a row is to run (Config.Only).
func (e *env) wanted(name string) bool {
	return len(e.cfg.Only) == 0 || slices.Contains(e.cfg.Only, name) ||
		slices.Contains(e.cfg.Only, "durability") && slices.Contains(durabilityRows, name)
}

func (e *env) plan(rate float64, d time.Duration) loadgen.Plan {
	e.seed++
	// One visiting order for the whole run, each slice starting where the
	// last one stopped: no user is met twice, so every attempt at the
	// open sale is a first attempt.
	p := loadgen.Plan{
		Workers: e.cfg.Workers, Duration: d, MaxRequests: e.pop.N - e.visit, Seed: 1, FirstVisit: e.visit,
		RunID: fmt.Sprintf("b%d-%x", e.seed, time.Now().UnixNano()&0xffffff),
	}
	if rate > 0 {
		// Enough slots that the open-loop rate is never clipped by the
		// slowest target (217 ms each way: rate x 0.5 s in flight).
		p.Rate, p.Workers = rate, max(256, int(rate))
	}
	return p
}

func (e *env) httpOp(url, sale string) (*loadgen.HTTPOp, error) {
	return loadgen.NewHTTPOp(loadgen.HTTPConfig{
		Endpoints: map[string]string{"eu": url}, Sale: sale, Signer: e.signer,
		Timeout: 5 * time.Second, Retries: 0,
	})
}

// counter serves the single global counter, its Redis reached through a
// delay proxy (none for 0).
func (e *env) counter(ctx context.Context, redisAddr string, delay time.Duration, dir string) (loadgen.Op, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	addr := redisAddr
	if delay > 0 {
		px, err := NewDelayProxy(redisAddr, delay)
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, func() { _ = px.Close() })
		addr = px.Addr
	}
	// Connections enough for the requests in flight at the open-loop rate
	// (one round trip each), so that the pool never queues them.
	inflight := int(e.cfg.Rate*2*(delay.Seconds()+0.005)) + 8
	url, stop, err := e.target(ctx, targetSpec{Kind: "counter", Redis: addr, Pool: 2 * inflight, Key: "bench:global", Total: openStock}, dir)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	closers = append(closers, stop)
	op, err := e.httpOp(url, "bench-global")
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	closers = append(closers, op.Close)
	return op, closeAll, nil
}

// target serves spec in a process of its own, or in this one with
// Config.InProcess.
func (e *env) target(ctx context.Context, spec targetSpec, dir string) (string, func(), error) {
	if e.cfg.InProcess {
		spec.Listen = "127.0.0.1:0"
		return serveTarget(ctx, spec, e.cfg.Log)
	}
	return startTarget(ctx, spec, dir)
}

func (e *env) add(name, kind string, rep *loadgen.Report, note string) {
	row := Row{
		Name: name, Kind: kind, Mode: rep.Mode, Throughput: rep.Throughput,
		P50: rep.All.P50, P99: rep.All.P99, P999: rep.All.P999,
		Attempts: rep.Attempts, Dropped: rep.Dropped, Outcomes: map[string]int{}, Note: note,
	}
	for k, l := range rep.ByOutcome {
		row.Outcomes[k] = l.Count
	}
	e.res.Rows = append(e.res.Rows, row)
}

// finish fills the ratios to the bare handler and the key ratios.
func (e *env) finish() {
	r := e.res
	bare := 0.0
	if b := r.row("bare"); b != nil {
		bare = b.Throughput
	}
	for i := range r.Rows {
		if bare > 0 && r.Rows[i].Mode == "closed" {
			r.Rows[i].RatioToBare = r.Rows[i].Throughput / bare
		}
	}
	tput := func(n string) float64 {
		if x := r.row(n); x != nil {
			return x.Throughput
		}
		return 0
	}
	p99 := func(n string) float64 {
		if x := r.row(n); x != nil {
			return float64(x.P99)
		}
		return 0
	}
	p50 := func(n string) float64 {
		if x := r.row(n); x != nil {
			return float64(x.P50)
		}
		return 0
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	// Each ratio is given only when both of its rows ran.
	add := func(name, a, b string, f func(string) float64, target float64) {
		if r.row(a) == nil || r.row(b) == nil {
			return
		}
		v := div(f(a), f(b))
		r.Ratios = append(r.Ratios, Ratio{Name: name, Value: v, Target: target, Met: target == 0 || v >= target})
	}
	// Supporting ratios first; the four key ones end the output.
	add("buy_before_sellout_everysec/bare", "buy_before_sellout_everysec", "bare", tput, 0)
	add("global_80ms_p50/regional_p50", "global_80ms", "regional", p50, 0)
	add("reserve_evalsha/incr", "redis_reserve_evalsha", "redis_incr", tput, 0)
	add("reserve_batcher/evalsha", "redis_reserve_batcher", "redis_reserve_evalsha", tput, 0)
	add("redis_evalsha/postgres", "redis_reserve_evalsha", "postgres_hot_row", tput, 0)
	add("durability_wait1/fsync", rowDurWait, rowDurFsync, tput, 0)
	add("durability_wait1_fsync/fsync", rowDurWaitFsync, rowDurFsync, tput, 0)
	add("buy_before_sellout/bare", "buy_before_sellout", "bare", tput, 0.5)
	add("buy_after_sellout/bare", "buy_after_sellout", "bare", tput, 0.9)
	add("global_80ms_p99/regional_p99", "global_80ms", "regional", p99, 10)
	// The seller's Redis path is the batched script (DESIGN §5 step 6).
	add("redis/postgres", "redis_reserve_batcher", "postgres_hot_row", tput, 20)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

func (e *env) print() {
	r := e.res
	w := tabwriter.NewWriter(e.cfg.Out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "name\tkind\tmode\treq/s\tp50\tp99\tp99.9\tx bare\tattempts\tnote\n")
	for _, row := range r.Rows {
		ratio := "-"
		if row.RatioToBare > 0 {
			ratio = fmt.Sprintf("%.3f", row.RatioToBare)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%s\n", row.Name, row.Kind, row.Mode, row.Throughput,
			ms(row.P50), ms(row.P99), ms(row.P999), ratio, row.Attempts, row.Note)
	}
	_ = w.Flush()
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(e.cfg.Out, "\n%s run: closed loop %d workers, open loop %.0f req/s, %v per scenario in %d interleaved slices after a %v warmup; shared cores: compare ratios, not absolutes\n",
		mode, r.Workers, r.Rate, r.Duration, e.cfg.Rounds, e.cfg.Warmup)
	v := r.Verdict
	if v.OK() {
		fmt.Fprintf(e.cfg.Out, "verify %s: ok (sold %d + reserved %d = generator's %d reservations; max per user %d; stream agrees)\n",
			saleOpen, v.Sold, v.Reserved, r.GeneratorReserved, v.MaxPerUser)
	} else {
		fmt.Fprintf(e.cfg.Out, "verify %s: FAILED: %s\n", saleOpen, strings.Join(v.Violations, "; "))
	}
	for _, x := range r.Ratios {
		if x.Target == 0 {
			continue
		}
		state := "met"
		if !x.Met {
			state = "NOT MET"
		}
		fmt.Fprintf(e.cfg.Out, "target %s >= %g: %s\n", x.Name, x.Target, state)
	}
	if r.Goodput != nil {
		fmt.Fprintln(e.cfg.Out)
		printGoodput(e.cfg.Out, r.Goodput)
	}
	if r.Quota != nil {
		fmt.Fprintln(e.cfg.Out)
		printQuota(e.cfg.Out, r.Quota)
	}
	if r.Gossip != nil {
		fmt.Fprintln(e.cfg.Out)
		printGossip(e.cfg.Out, r.Gossip)
	}
	for _, x := range r.Ratios {
		fmt.Fprintf(e.cfg.Out, "ratio %s %.3f\n", x.Name, x.Value)
	}
}

func (e *env) write() error {
	if e.cfg.ResultsDir == "" {
		return nil
	}
	if err := os.MkdirAll(e.cfg.ResultsDir, 0o755); err != nil {
		return fmt.Errorf("bench: results dir: %w", err)
	}
	b, err := json.MarshalIndent(e.res, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: results: %w", err)
	}
	name := "bench-" + e.res.Started.Format("20060102T150405Z") + ".json"
	var errs []error
	for _, n := range []string{name, "bench-latest.json"} {
		if err := os.WriteFile(filepath.Join(e.cfg.ResultsDir, n), b, 0o644); err != nil {
			errs = append(errs, fmt.Errorf("bench: write %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
