package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/quota/layout"
	"flashsale/regional"
	"flashsale/regional/redisstore"
	"flashsale/simulations/loadgen"
)

// The goodput curve (issue 14): the seller under overload. Closed loop at
// growing numbers of connections, each a client that honours the seller's
// retry hint (retryAfterMs of a 503 overloaded), then the seller's peak
// concurrency right after the largest (how soon goodput comes back), then
// open loop at multiples of the measured capacity (arrivals that do not
// wait for anything). Each point sells from its own Redis counters, read
// before and after, so the units reserved in Redis are set against what
// the buyers were told.

// GoodputPoint is one point of the curve.
type GoodputPoint struct {
	Name        string         `json:"name"`
	Mode        string         `json:"mode"` // closed or open
	Conns       int            `json:"conns,omitempty"`
	OfferedRate float64        `json:"offered_rate,omitempty"`  // open loop: asked for
	AchievedArr float64        `json:"achieved_rate,omitempty"` // open loop: arrivals started per second
	Goodput     float64        `json:"goodput"`                 // reservations told per second of the window
	Answers     float64        `json:"answers"`                 // answers per second
	Within200ms float64        `json:"within_200ms"`            // share of answers within 200 ms
	P99Admitted time.Duration  `json:"p99_admitted_ns"`         // the last try of attempts not shed (overloaded) nor timed out
	Outcomes    map[string]int `json:"outcomes"`
	Answered    int            `json:"answered"`
	Unknown     int            `json:"outcome_unknown"`
	MadeInRedis int64          `json:"made_in_redis"`
	Told        int            `json:"told_reserved"`
	UnknownHeld int            `json:"unknown_held"`
	Phantoms    int64          `json:"phantoms"`
	CPU         CPUUse         `json:"cpu"`

	began, ended time.Time // the run's start, and when its last attempt was answered
}

// GoodputResults is the curve and its targets.
type GoodputResults struct {
	Points   []GoodputPoint `json:"points"`
	Peak     float64        `json:"peak"`
	PeakAt   int            `json:"peak_conns"`
	Recovery time.Duration  `json:"recovery_ns"` // -1: not back within the run
	Ratios   []Ratio        `json:"ratios"`
	// Bare is the bare Go handler (net/http, decoding the buy JSON, no
	// Redis, no limit) at the peak's and the largest connection count,
	// closed loop, measured the same way: how much of the drop at many
	// connections is net/http's and this machine's, not the seller's.
	Bare []GoodputPoint `json:"bare"`
	// StoreBound is the curve's 64, 1,000 and largest closed-loop points
	// against a second seller whose Redis is StoreDelay away each way
	// (DelayProxy): the seller's Redis path, not its CPU, is then what
	// runs out first, as in a region whose sellers are scaled out in
	// front of one Redis. Full runs only.
	StoreBound []GoodputPoint `json:"store_bound,omitempty"`
	StoreDelay time.Duration  `json:"store_delay_ns,omitempty"`
}

const saleGoodput = "bench-goodput"

// storeBoundDelay is the one-way delay to Redis of the store-bound
// reference's seller: enough that its Redis path (the Batcher's 4 batches
// in flight) caps it near 4,000 reservations/s, below what the cores
// allow, as a saturated Redis would.
const storeBoundDelay = 10 * time.Millisecond

// goodputConfig is the curve's shape for a run.
type goodputConfig struct {
	conns           []int
	open            []float64 // multiples of the capacity
	each, warm, rec time.Duration
}

func (c Config) goodput() goodputConfig {
	gc := goodputConfig{conns: []int{64, 1000, 2000, 4000, 8000}, open: []float64{1, 2, 3}, each: 5 * time.Second, warm: time.Second, rec: 3 * time.Second}
	if c.Quick {
		gc = goodputConfig{conns: []int{64, 2000, 8000}, open: []float64{1, 2}, each: 2 * time.Second, warm: 500 * time.Millisecond, rec: 2 * time.Second}
	}
	if len(c.GoodputConns) > 0 {
		gc.conns = c.GoodputConns
	}
	if len(c.GoodputOpen) > 0 {
		gc.open = c.GoodputOpen
	}
	if c.NoGoodputOpen {
		gc.open = nil
	}
	return gc
}

// raiseNoFile lifts this process's open-file limit to its hard limit (the
// targets it starts inherit it): 8,000 connections need 8,000 descriptors
// on each side.
func raiseNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// unknownRecorder wraps an Op and keeps the requestIds whose buyer does
// not know the outcome (answered outcome_unknown, or whose last try timed
// out at the client: told nothing, it knows it does not know), to ask
// Redis which of them hold a unit.
type unknownRecorder struct {
	op  loadgen.Op
	mu  sync.Mutex
	ids []string
}

func (u *unknownRecorder) Do(ctx context.Context, a loadgen.Attempt) loadgen.Result {
	r := u.op.Do(ctx, a)
	if r.Outcome == regional.CodeOutcomeUnknown || r.Outcome == "timeout" {
		u.mu.Lock()
		u.ids = append(u.ids, a.RequestID)
		u.mu.Unlock()
	}
	return r
}

func (u *unknownRecorder) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	ids := u.ids
	u.ids = nil
	return ids
}

// held is what the goodput sale holds in Redis (sold + reserved).
func held(ctx context.Context, store *redisstore.Store) (int64, error) {
	c, err := store.Counters(ctx, saleGoodput)
	if err != nil {
		return 0, err
	}
	return c.Sold + c.Reserved, nil
}

// settle waits until the sale's counters stop moving: every request of a
// point has been answered, but a script sent late may still land.
func settle(ctx context.Context, store *redisstore.Store) (int64, error) {
	last, err := held(ctx, store)
	if err != nil {
		return 0, err
	}
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		n, err := held(ctx, store)
		if err != nil {
			return 0, err
		}
		if n == last {
			return n, nil
		}
		last = n
	}
	return last, nil
}

// runGoodput runs the curve against the seller at url, whose Redis is rdb,
// and the reference points against the bare handler at bareURL and, when
// storeURL is set, against a seller on the same Redis storeDelay away.
func (e *env) runGoodput(ctx context.Context, url, bareURL, storeURL string, storeDelay time.Duration, rdb *redis.Client, region string) (*GoodputResults, error) {
	gc := e.cfg.goodput()
	nofile := raiseNoFile()
	if need := uint64(slices.Max(gc.conns)) + 512; nofile < need {
		e.cfg.Log.Warn("bench: open-file limit below the largest point", "limit", nofile, "need", need)
	}
	store := redisstore.NewStore(rdb, region)
	newOp := func(url string) (*loadgen.HTTPOp, error) {
		return loadgen.NewHTTPOp(loadgen.HTTPConfig{
			// A try that times out is retried once with the same
			// requestId, as the API asks (openapi.yaml): the buyer then
			// learns of a reservation the lost answer carried.
			Endpoints: map[string]string{"eu": url}, Sale: saleGoodput, Signer: e.signer, Timeout: 5 * time.Second, Retries: 1,
		})
	}
	op, err := newOp(url)
	if err != nil {
		return nil, err
	}
	defer op.Close()
	out := &GoodputResults{Recovery: -1}

	// pointAt runs one point against the seller at url through op.
	pointAt := func(op *loadgen.HTTPOp, url, name string, plan loadgen.Plan) (GoodputPoint, *loadgen.Report, error) {
		rec := &unknownRecorder{op: op}
		before, err := held(ctx, store)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput: %w", err)
		}
		// The buyers' connections are open before the point starts, as
		// a buyer's page is loaded before the sale opens (see
		// loadgen.HTTPOp.Connect): the point measures buying, not
		// 8,000 dials at once.
		t0 := time.Now()
		conns, err := op.Connect(ctx, plan.Workers, 256)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		e.cfg.Log.Info("bench: goodput", "point", name, "connections", conns, "opened_in", time.Since(t0).Round(time.Millisecond))
		cpu0, err := readCPU(ctx, url, rdb)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		began := time.Now()
		rep, err := loadgen.Run(ctx, plan, e.pop, rec, nil)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		ended := time.Now()
		cpu1, err := readCPU(ctx, url, rdb)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		e.visit = rep.NextVisit
		after, err := settle(ctx, store)
		if err != nil {
			return GoodputPoint{}, nil, fmt.Errorf("bench goodput: %w", err)
		}
		p := summarize(name, plan, rep)
		if dir := e.cfg.GoodputSamples; dir != "" {
			if err := writeSamples(filepath.Join(dir, "goodput-"+name+".tsv"), rep.Samples); err != nil {
				return GoodputPoint{}, nil, fmt.Errorf("bench goodput %s: %w", name, err)
			}
		}
		requests := 0
		for _, s := range rep.Samples {
			requests += s.Retries + 1
		}
		p.CPU = use(cpu0, cpu1, requests)
		p.MadeInRedis = after - before
		p.Told = rep.Reserved
		if ids := rec.take(); len(ids) > 0 {
			vals, err := rdb.HMGet(ctx, layout.SaleKey(saleGoodput, "req"), ids...).Result()
			if err != nil {
				return GoodputPoint{}, nil, fmt.Errorf("bench goodput: %w", err)
			}
			for _, v := range vals {
				if v != nil {
					p.UnknownHeld++
				}
			}
		}
		p.Phantoms = p.MadeInRedis - int64(p.Told) - int64(p.UnknownHeld)
		p.began, p.ended = began, ended
		return p, rep, nil
	}
	point := func(name string, plan loadgen.Plan) (GoodputPoint, *loadgen.Report, error) {
		return pointAt(op, url, name, plan)
	}
	plan := func(workers int, rate float64, d, warm time.Duration) loadgen.Plan {
		e.seed++
		return loadgen.Plan{
			Workers: workers, Rate: rate, Duration: d, Warmup: warm, MaxRequests: e.pop.N - e.visit, Seed: 1, FirstVisit: e.visit,
			RunID: fmt.Sprintf("g%d-%x", e.seed, time.Now().UnixNano()&0xffffff), ObeyRetryAfter: rate == 0,
		}
	}

	for _, n := range gc.conns {
		p, _, err := point(fmt.Sprintf("closed_%d", n), plan(n, 0, gc.each, gc.warm))
		if err != nil {
			return nil, err
		}
		out.Points = append(out.Points, p)
		if p.Goodput > out.Peak {
			out.Peak, out.PeakAt = p.Goodput, n
		}
	}
	// Recovery: the peak's concurrency right after the largest point. The
	// overload stopped when the largest point's last attempt was answered;
	// its bookkeeping (settle: at least 250 ms) counts in the recovery,
	// so the figure is an upper bound.
	last := out.Points[len(out.Points)-1]
	rp, rrep, err := point("recovery", plan(out.PeakAt, 0, gc.rec, 0))
	if err != nil {
		return nil, err
	}
	out.Points = append(out.Points, rp)
	out.Recovery = recoveryTime(rrep.Samples, out.Peak, gc.rec, rp.began.Sub(last.ended))

	for _, k := range gc.open {
		rate := k * out.Peak
		p, _, err := point(fmt.Sprintf("open_%gx", k), plan(8000, rate, gc.each, gc.warm))
		if err != nil {
			return nil, err
		}
		out.Points = append(out.Points, p)
	}

	// The bare handler at the peak's and the largest connection count.
	bare, err := loadgen.NewHTTPOp(loadgen.HTTPConfig{Endpoints: map[string]string{"eu": bareURL}, Sale: saleGoodput, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	for _, n := range []int{out.PeakAt, slices.Max(gc.conns)} {
		name := fmt.Sprintf("bare_%d", n)
		pl := plan(n, 0, gc.each, gc.warm)
		if _, err := bare.Connect(ctx, n, 256); err != nil {
			return nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		rep, err := loadgen.Run(ctx, pl, e.pop, bare, nil)
		if err != nil {
			return nil, fmt.Errorf("bench goodput %s: %w", name, err)
		}
		e.visit = rep.NextVisit
		out.Bare = append(out.Bare, summarize(name, pl, rep))
	}

	// The store-bound reference: not in the targets, which are the
	// curve's.
	if storeURL != "" {
		// Its 8,000 connections are opened after the others are closed
		// (the open-file limit here is 20,000).
		op.Close()
		bare.Close()
		sop, err := newOp(storeURL)
		if err != nil {
			return nil, err
		}
		defer sop.Close()
		out.StoreDelay = storeDelay
		ns := []int{64, 1000, slices.Max(gc.conns)}
		slices.Sort(ns)
		for _, n := range slices.Compact(ns) {
			p, _, err := pointAt(sop, storeURL, fmt.Sprintf("store_bound_%d", n), plan(n, 0, gc.each, gc.warm))
			if err != nil {
				return nil, err
			}
			out.StoreBound = append(out.StoreBound, p)
		}
	}

	// Targets.
	worstP99, unknown, answered := time.Duration(0), 0, 0
	phantoms := phantomsOf(out.Points)
	at8000 := 0.0
	for _, p := range out.Points {
		worstP99 = max(worstP99, p.P99Admitted)
		unknown += p.Unknown
		answered += p.Answered
		if p.Mode == "closed" && p.Conns == slices.Max(gc.conns) && p.Name != "recovery" {
			at8000 = p.Goodput
		}
	}
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	rec8000 := Ratio{Name: fmt.Sprintf("goodput_%d/peak", slices.Max(gc.conns)), Value: div(at8000, out.Peak), Target: 0.8}
	rec8000.Met = rec8000.Value >= rec8000.Target
	out.Ratios = append(out.Ratios, rec8000,
		Ratio{Name: "phantom_reservations", Value: float64(phantoms), Met: phantoms == 0},
		Ratio{Name: "outcome_unknown_share", Value: div(float64(unknown), float64(answered)), Target: 0.01, Met: div(float64(unknown), float64(answered)) <= 0.01},
		Ratio{Name: "p99_admitted_ms", Value: float64(worstP99) / 1e6, Target: 200, Met: worstP99 < 200*time.Millisecond},
		Ratio{Name: "recovery_s", Value: recoverySeconds(out.Recovery), Target: 2, Met: out.Recovery >= 0 && out.Recovery <= 2*time.Second},
	)
	return out, nil
}

// writeSamples writes one line per attempt: outcome, start and latency of
// the attempt and of its last try (ms from the run's start), retries. The
// time series that found the 8,000-connection point answering nothing for
// its first 1.4 s (Connect's dials overflowing the accept queue).
func writeSamples(path string, samples []loadgen.Sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "outcome\tstart_ms\tlatency_ms\tlast_try_ms\tretries\n")
	for _, s := range samples {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\n", s.Outcome, s.At.Milliseconds(), s.Latency.Milliseconds(), s.LastTry.Milliseconds(), s.Retries)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// recoverySeconds is the recovery for the ratios: -1 (not -1 ns, which
// prints as -0.000) when goodput never came back.
func recoverySeconds(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return d.Seconds()
}

// summarize turns a report into a point. The rates (reservations and
// answers per second) count the answers that arrived within the measured
// window, [warmup, duration) of the run, over that window's length: the
// attempts still in flight at the deadline (a shed buyer waiting out its
// hint, then retrying) finish after it and must not stretch the window,
// which would dilute the rate of an overloaded point by the hint (up to
// 5 s on a 1.5 s window). The shares and percentiles are over the
// attempts started within the window.
func summarize(name string, plan loadgen.Plan, rep *loadgen.Report) GoodputPoint {
	p := GoodputPoint{Name: name, Mode: rep.Mode, Outcomes: map[string]int{}}
	if plan.Rate > 0 {
		p.OfferedRate = plan.Rate
		if rep.Window > 0 {
			p.AchievedArr = float64(rep.Attempts+rep.Dropped) / rep.Window.Seconds()
		}
	} else {
		p.Conns = plan.Workers
	}
	var admitted []time.Duration
	within, reservedIn, answeredIn := 0, 0, 0
	for _, s := range rep.Samples {
		if end := s.At + s.Latency; end >= plan.Warmup && end < plan.Duration {
			answeredIn++
			if s.Outcome == loadgen.OutcomeReserved {
				reservedIn++
			}
		}
		if s.At < plan.Warmup {
			if s.Outcome == regional.CodeOutcomeUnknown {
				p.Unknown++ // counted whole-run, as the phantoms are
			}
			continue
		}
		p.Outcomes[s.Outcome]++
		p.Answered++
		if s.Latency <= 200*time.Millisecond {
			within++
		}
		if s.Outcome == regional.CodeOutcomeUnknown {
			p.Unknown++
		}
		if s.Outcome != regional.CodeOverloaded && s.Outcome != "timeout" {
			// The admitted try's own latency: an attempt first shed,
			// then admitted on its retry, also holds the wait the seller
			// asked for, which is not the latency of admitted work.
			admitted = append(admitted, cmp.Or(s.LastTry, s.Latency))
		}
	}
	if w := (plan.Duration - plan.Warmup).Seconds(); w > 0 {
		p.Goodput = float64(reservedIn) / w
		p.Answers = float64(answeredIn) / w
	}
	if p.Answered > 0 {
		p.Within200ms = float64(within) / float64(p.Answered)
	}
	if len(admitted) > 0 {
		slices.Sort(admitted)
		p.P99Admitted = admitted[min(len(admitted)-1, len(admitted)*99/100)]
	}
	return p
}

// recoveryTime is how long after the overload stopped goodput was back
// at 0.9 of the peak: gap (from the overload's last answer to the start
// of the run that follows it, d long) plus the start of the first 500 ms
// window of that run whose goodput, and the goodput of the rest of the
// run from there, are both at least 0.9 of the peak. The second condition
// keeps one lucky window followed by a slump from counting as
// recovered. Reservations count when answered; only answers before d
// count (the tail after the run's deadline is not steady state). -1 if
// goodput was never back within the run.
func recoveryTime(samples []loadgen.Sample, peak float64, d, gap time.Duration) time.Duration {
	const bin = 100 * time.Millisecond
	const w = 5 // bins: 500 ms
	n := int(d / bin)
	if n < w || peak <= 0 {
		return -1
	}
	bins := make([]int, n)
	for _, s := range samples {
		if s.Outcome != loadgen.OutcomeReserved {
			continue
		}
		if i := int((s.At + s.Latency) / bin); i >= 0 && i < n {
			bins[i]++
		}
	}
	rate := func(from, to int) float64 {
		sum := 0
		for _, c := range bins[from:to] {
			sum += c
		}
		return float64(sum) / (float64(to-from) * bin.Seconds())
	}
	for i := 0; i+w <= n; i++ {
		if rate(i, i+w) >= 0.9*peak && rate(i, n) >= 0.9*peak {
			return gap + time.Duration(i)*bin
		}
	}
	return -1
}

func printGoodput(out io.Writer, g *GoodputResults) {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "goodput point\tconns/rate\tachieved\treserved/s\tanswers/s\t<=200ms\tp99 admitted\tunknown\tmade in Redis\ttold\tphantoms\tcores gen/seller/redis\tseller µs/req\toutcomes\n")
	for _, p := range g.Points {
		load, ach := fmt.Sprint(p.Conns), "-"
		if p.Mode == "open" {
			load, ach = fmt.Sprintf("%.0f/s", p.OfferedRate), fmt.Sprintf("%.0f/s", p.AchievedArr)
		}
		var oc []string
		for k, v := range p.Outcomes {
			oc = append(oc, fmt.Sprintf("%s=%d", k, v))
		}
		slices.Sort(oc)
		fmt.Fprintf(w, "%s\t%s\t%s\t%.0f\t%.0f\t%.3f\t%s\t%d\t%d\t%d\t%d\t%.2f/%.2f/%.2f\t%.0f\t%s\n", p.Name, load, ach, p.Goodput, p.Answers,
			p.Within200ms, ms(p.P99Admitted), p.Unknown, p.MadeInRedis, p.Told, p.Phantoms,
			p.CPU.Gen, p.CPU.Seller, p.CPU.Redis, p.CPU.SellerPerReqUs, strings.Join(oc, " "))
	}
	_ = w.Flush()
	back := "not within the recovery run"
	if g.Recovery >= 0 {
		back = g.Recovery.Round(10*time.Millisecond).String() + " after the overload stopped"
	}
	// Recovery is -1 when goodput never came back: printed rounded, it
	// read "0s" (and the target "met" in spirit), the bug of the first
	// version.
	fmt.Fprintf(out, "goodput peak %.0f reservations/s at %d connections; back to 0.9 of it: %s (500 ms window, and the rest of the run)\n",
		g.Peak, g.PeakAt, back)
	if len(g.Bare) == 2 && g.Bare[0].Answers > 0 {
		fmt.Fprintf(out, "reference: the bare net/http handler answered %.0f/s at %d connections and %.0f/s at %d (%.3f), p99 %s and %s\n",
			g.Bare[0].Answers, g.Bare[0].Conns, g.Bare[1].Answers, g.Bare[1].Conns, g.Bare[1].Answers/g.Bare[0].Answers,
			ms(g.Bare[0].P99Admitted), ms(g.Bare[1].P99Admitted))
	}
	if sb := g.StoreBound; len(sb) > 0 {
		peak, at := 0.0, 0
		for _, p := range sb {
			if p.Goodput > peak {
				peak, at = p.Goodput, p.Conns
			}
		}
		last := sb[len(sb)-1]
		ratio := 0.0
		if peak > 0 {
			ratio = last.Goodput / peak
		}
		var each []string
		for _, p := range sb {
			each = append(each, fmt.Sprintf("%d: %.0f/s p99 admitted %s", p.Conns, p.Goodput, ms(p.P99Admitted)))
		}
		fmt.Fprintf(out, "store-bound reference, the seller's Redis %v away each way: %s; %d connections %.3f of its peak (at %d), phantoms %d\n",
			g.StoreDelay, strings.Join(each, ", "), last.Conns, ratio, at, phantomsOf(sb))
	}
	for _, r := range g.Ratios {
		state := "met"
		if !r.Met {
			state = "NOT MET"
		}
		fmt.Fprintf(out, "target %s %.3f: %s\n", r.Name, r.Value, state)
	}
}

// phantomsOf sums the points' phantom reservations; a point whose count
// came out negative adds none.
func phantomsOf(ps []GoodputPoint) int64 {
	var n int64
	for _, p := range ps {
		n += max(0, p.Phantoms)
	}
	return n
}
