package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Plan says how hard and how long to drive a target.
type Plan struct {
	// Rate > 0 runs open-loop: Poisson arrivals at Rate per second, each
	// timed from its scheduled start (so a slow target cannot hide its
	// queueing: no coordinated omission). Rate == 0 runs closed-loop.
	Rate float64
	// Workers is the closed-loop concurrency, or in open loop the most
	// attempts in flight: arrivals beyond it are counted as Dropped, not
	// delayed, so the offered load stays what was asked.
	Workers int
	// Duration bounds the run; MaxRequests bounds the attempts (each user
	// buys at most once, so it is also capped by the population).
	Duration    time.Duration
	MaxRequests int
	// Warmup: attempts started before it run but are left out of the
	// figures (connection set-up, script loading).
	Warmup time.Duration
	// Seed fixes the visiting order of users and the arrival times.
	Seed uint64
	// FirstVisit is where in the visiting order this run starts: runs
	// with the same Seed and successive FirstVisit (the previous report's
	// NextVisit) never share a user.
	FirstVisit int
	// RunID prefixes request ids so that two runs against the same Redis
	// never collide; empty picks a random one.
	RunID string
	// ObeyRetryAfter makes a closed-loop worker told to wait (a Result
	// with RetryAfter, from a 503 overloaded's retryAfterMs) wait that
	// long before its next attempt, as a well-behaved client does.
	ObeyRetryAfter bool
}

// Check validates the plan, naming the bad value.
func (p Plan) Check() error {
	switch {
	case p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0):
		return fmt.Errorf("rate %v: want >= 0 (0 means closed loop)", p.Rate)
	case p.Workers < 1:
		return fmt.Errorf("workers %d: want >= 1", p.Workers)
	case p.Duration <= 0:
		return fmt.Errorf("duration %v: want > 0", p.Duration)
	case p.MaxRequests < 1:
		return fmt.Errorf("max requests %d: want >= 1", p.MaxRequests)
	case p.FirstVisit < 0:
		return fmt.Errorf("first visit %d: want >= 0", p.FirstVisit)
	case p.Warmup < 0 || p.Warmup >= p.Duration:
		return fmt.Errorf("warmup %v: want 0 <= warmup < duration %v", p.Warmup, p.Duration)
	}
	return nil
}

// Attempt is one user's purchase attempt. Retries of it reuse RequestID.
type Attempt struct {
	Seq       int
	User      User
	RequestID string
	Scheduled time.Time
	// Client is the buyer's client that makes the attempt (1..Workers),
	// which keeps its connection, as a buyer's browser does: in closed
	// loop each worker is one client; in open loop an arrival takes a
	// client free at that moment. 0: none (an Op may share connections).
	Client int
}

// Result is what an attempt ended as. Outcome is a short stable word
// ("reserved", "sold_out", "user_limit", "error", ...); Reserved says a unit
// is now held for the user; ReservationID names it if the target said.
type Result struct {
	Outcome       string
	Reserved      bool
	ReservationID string
	Err           error
	// RetryAfter is the target's hint to wait before trying again
	// (retryAfterMs of a retryable refusal, else Retry-After); zero if none.
	RetryAfter time.Duration
	// Retries is how many tries the attempt took beyond the first.
	Retries int
	// LastTry is how long the last try took, from its send to its answer
	// (0: not measured); the attempt's latency also holds the tries and
	// retry waits before it.
	LastTry time.Duration
	// Answers lists the outcome of every try, in order (the last is
	// Outcome); ops that do not retry may leave it empty.
	Answers []string
}

// Op performs one attempt against a target.
type Op interface {
	Do(ctx context.Context, a Attempt) Result
}

// OpFunc adapts a function to Op.
type OpFunc func(ctx context.Context, a Attempt) Result

// Do calls f.
func (f OpFunc) Do(ctx context.Context, a Attempt) Result { return f(ctx, a) }

// Follower is an Op that does more after a successful attempt (confirm or
// cancel the reservation); its samples are reported under their own
// outcomes and do not count in the attempt's latency.
type Follower interface {
	Follow(ctx context.Context, a Attempt, r Result) []Sample
}

// Outcomes every op shares.
const (
	OutcomeReserved = "reserved"
	OutcomeSoldOut  = "sold_out"
	OutcomeError    = "error"
)

// Report is the result of one run.
type Report struct {
	Mode     string        `json:"mode"` // "open" or "closed"
	Rate     float64       `json:"rate,omitempty"`
	Workers  int           `json:"workers"`
	Warmup   time.Duration `json:"warmup_ns"` // left out of the figures
	Window   time.Duration `json:"window_ns"` // measured time, after warmup
	Attempts int           `json:"attempts"`  // measured attempts
	Dropped  int           `json:"dropped"`   // open loop: arrivals over the in-flight cap
	// Throughput is measured attempts completed per second of the window.
	Throughput float64            `json:"throughput"`
	All        Latency            `json:"all"`        // every measured attempt
	ByOutcome  map[string]Latency `json:"by_outcome"` // attempts and follow-ups
	Reserved   int                `json:"reserved"`   // attempts that got a unit (whole run)
	// SoldOutAfter is when the first sold_out answer arrived, from the
	// start of the run; zero if none did.
	SoldOutAfter time.Duration `json:"sold_out_after_ns"`
	// SoldOutAfterByRegion is the same per home region of the users: a
	// region whose stock ran out early while quota still sat elsewhere
	// shows here, not in the whole-run figure. Regions never answered
	// sold_out are absent.
	SoldOutAfterByRegion map[string]time.Duration `json:"sold_out_after_by_region_ns,omitempty"`
	Errors               map[string]int           `json:"errors,omitempty"` // distinct error texts, capped
	// Answers counts every answer by code, retries included (an attempt
	// told quota_pending twice and then reserved counts three answers);
	// ByOutcome counts attempts by their last answer. Answers["sold_out"]
	// is the number of 410 sold_out answers the verifier weighs against
	// the stock left (VerifyOptions.SoldOutAnswers).
	Answers map[string]int `json:"answers,omitempty"`
	// Retries per measured attempt (tries beyond the first).
	RetriesP50 int `json:"retries_p50"`
	RetriesP99 int `json:"retries_p99"`
	RetriesMax int `json:"retries_max"`
	// NextVisit is the FirstVisit for a following run that must meet
	// only new users.
	NextVisit int      `json:"next_visit"`
	Samples   []Sample `json:"-"` // every sample, for plots
}

// Progress, if given to Run, is told of every finished attempt.
type Progress func(done int)

// Run drives op with plan over the population and returns the figures. It
// returns early, with what it measured, if ctx ends.
func Run(ctx context.Context, plan Plan, pop *Population, op Op, progress Progress) (*Report, error) {
	if err := plan.Check(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if pop == nil {
		return nil, errors.New("run: nil population")
	}
	if op == nil {
		return nil, errors.New("run: nil op")
	}
	if plan.FirstVisit >= pop.N {
		return nil, fmt.Errorf("run: first visit %d: every one of the %d users has had a turn", plan.FirstVisit, pop.N)
	}
	max := plan.FirstVisit + min(plan.MaxRequests, pop.N-plan.FirstVisit)
	runID := plan.RunID
	if runID == "" {
		runID = strconv.FormatUint(rand.Uint64()&0xffffffffff, 36)
	}
	order := pop.NewOrder(plan.Seed)
	r := &runner{
		plan: plan, pop: pop, op: op, order: order, runID: runID, max: max,
		progress: progress, errs: map[string]int{}, soldOutBy: map[string]*atomic.Int64{}, answers: map[string]int{},
	}
	// One counter per region, made up front: the map is then only read,
	// so sold_out answers (most of a sold-out run) take no lock.
	for _, rw := range pop.Regions {
		r.soldOutBy[rw.Name] = new(atomic.Int64)
	}
	r.follower, _ = op.(Follower)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.start = time.Now()
	r.deadline = r.start.Add(plan.Duration)
	if plan.Rate > 0 {
		r.open(ctx)
	} else {
		r.closed(ctx)
	}
	return r.report(), nil
}

type runner struct {
	plan     Plan
	pop      *Population
	op       Op
	follower Follower
	order    Order
	runID    string
	max      int
	progress Progress

	start, deadline time.Time
	rec             recorder
	done            atomic.Int64
	dropped         atomic.Int64
	reserved        atomic.Int64
	soldOutAt       atomic.Int64             // ns since start + 1; 0 = not yet
	soldOutBy       map[string]*atomic.Int64 // the same per home region
	nextVisit       int                      // set when the run ends

	errMu sync.Mutex
	errs  map[string]int

	ansMu   sync.Mutex
	answers map[string]int
}

func (r *runner) attempt(seq int, scheduled time.Time) Attempt {
	return Attempt{
		Seq:       seq,
		User:      r.pop.User(r.order.At(seq)),
		RequestID: r.runID + "-" + strconv.Itoa(seq),
		Scheduled: scheduled,
	}
}

// one runs an attempt and records it; it returns the target's retry hint.
func (r *runner) one(ctx context.Context, a Attempt) time.Duration {
	res := r.op.Do(ctx, a)
	end := time.Now()
	at := a.Scheduled.Sub(r.start)
	outcome := res.Outcome
	if outcome == "" {
		outcome = OutcomeError
	}
	r.rec.add(uint64(a.Seq), Sample{Outcome: outcome, At: at, Latency: end.Sub(a.Scheduled), Retries: res.Retries, LastTry: res.LastTry})
	r.countAnswers(res)
	if res.Reserved {
		r.reserved.Add(1)
	}
	if outcome == OutcomeSoldOut {
		at := int64(end.Sub(r.start)) + 1
		storeFirst(&r.soldOutAt, at)
		if c := r.soldOutBy[a.User.Region]; c != nil {
			storeFirst(c, at)
		}
	}
	if res.Err != nil {
		r.noteErr(res.Err)
	}
	if r.follower != nil && res.Reserved {
		for _, s := range r.follower.Follow(ctx, a, res) {
			s.At = time.Since(r.start) - s.Latency
			r.rec.add(uint64(a.Seq), s)
		}
	}
	n := r.done.Add(1)
	if r.progress != nil {
		r.progress(int(n))
	}
	return res.RetryAfter
}

// storeFirst keeps the earliest non-zero time: concurrent workers may
// record a sold_out that ended later before one that ended sooner. Once
// set, a later answer costs one load.
func storeFirst(c *atomic.Int64, at int64) {
	for {
		old := c.Load()
		if (old != 0 && old <= at) || c.CompareAndSwap(old, at) {
			return
		}
	}
}

func (r *runner) countAnswers(res Result) {
	answers := res.Answers
	if len(answers) == 0 {
		answers = []string{cmp.Or(res.Outcome, OutcomeError)}
	}
	r.ansMu.Lock()
	defer r.ansMu.Unlock()
	for _, a := range answers {
		r.answers[a]++
	}
}

func (r *runner) noteErr(err error) {
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if _, ok := r.errs[msg]; ok || len(r.errs) < 20 {
		r.errs[msg]++
	}
}

func (r *runner) closed(ctx context.Context) {
	var next atomic.Int64
	next.Store(int64(r.plan.FirstVisit))
	var wg sync.WaitGroup
	for w := range r.plan.Workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if now.After(r.deadline) {
					return
				}
				seq := int(next.Add(1) - 1)
				if seq >= r.max {
					return
				}
				a := r.attempt(seq, now)
				a.Client = w + 1
				wait := r.one(ctx, a)
				if r.plan.ObeyRetryAfter && wait > 0 {
					d := min(wait, time.Until(r.deadline))
					if d <= 0 {
						return
					}
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
					case <-t.C:
					}
					t.Stop()
				}
			}
		})
	}
	wg.Wait()
	// Workers that found the deadline passed took no turn; one that did
	// take a turn over the bound used no user.
	r.nextVisit = min(int(next.Load()), r.max)
}

func (r *runner) open(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.plan.Seed, r.plan.Seed^0x5eed))
	// The clients free to take an arrival: at most Workers attempts run
	// at once, each on a client of its own (its connection opened ahead
	// by Connect, as a buyer's page is loaded before the sale).
	clients := make(chan int, r.plan.Workers)
	for c := range r.plan.Workers {
		clients <- c + 1
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	next := r.start
	timer := time.NewTimer(0)
	defer timer.Stop()
	seq := r.plan.FirstVisit
	// Dropped arrivals used their user's turn too: it stays used.
	defer func() { r.nextVisit = seq }()
	for ; seq < r.max; seq++ {
		next = next.Add(time.Duration(rng.ExpFloat64() / r.plan.Rate * float64(time.Second)))
		if next.After(r.deadline) {
			return
		}
		// Sleeping per arrival is too coarse at tens of thousands a
		// second: wait only when at least a millisecond ahead, and start
		// every arrival already due in a burst.
		if d := time.Until(next); d > time.Millisecond {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		var c int
		select {
		case c = <-clients:
		default:
			r.dropped.Add(1)
			continue
		}
		a := r.attempt(seq, next)
		a.Client = c
		wg.Go(func() {
			defer func() { clients <- c }()
			r.one(ctx, a)
		})
	}
}

func (r *runner) report() *Report {
	samples := r.rec.all()
	rep := &Report{
		Mode: "closed", Rate: r.plan.Rate, Workers: r.plan.Workers, Warmup: r.plan.Warmup,
		Dropped: int(r.dropped.Load()), Reserved: int(r.reserved.Load()),
		ByOutcome: map[string]Latency{}, Errors: r.errs, Samples: samples, NextVisit: r.nextVisit, Answers: r.answers,
	}
	if r.plan.Rate > 0 {
		rep.Mode = "open"
	}
	if at := r.soldOutAt.Load(); at > 0 {
		rep.SoldOutAfter = time.Duration(at - 1)
	}
	for region, c := range r.soldOutBy {
		if at := c.Load(); at > 0 {
			if rep.SoldOutAfterByRegion == nil {
				rep.SoldOutAfterByRegion = map[string]time.Duration{}
			}
			rep.SoldOutAfterByRegion[region] = time.Duration(at - 1)
		}
	}
	// The window ends when the last measured attempt finished (or at the
	// deadline if the run stopped on it), so a run that exhausts its users
	// early is not diluted by idle time.
	end := time.Duration(0)
	var lat latencies
	for _, s := range samples {
		if s.At < r.plan.Warmup {
			continue
		}
		lat.add(s)
		if !isFollow(s.Outcome) {
			end = max(end, s.At+s.Latency)
		}
	}
	lat.fill(rep)
	rep.RetriesP50, rep.RetriesP99, rep.RetriesMax = retryPercentiles(samples, r.plan.Warmup)
	rep.Window = end - r.plan.Warmup
	if r.plan.Rate > 0 {
		// Open loop: the rate is what arrived over the arrival period; the
		// tail of slow answers after it is latency, not lost throughput.
		rep.Window = min(r.plan.Duration, time.Since(r.start)) - r.plan.Warmup
	}
	if rep.Window > 0 {
		rep.Throughput = float64(rep.Attempts) / rep.Window.Seconds()
	}
	return rep
}

// FollowPrefix marks a follow-up sample's outcome ("confirm:ok").
const (
	ConfirmPrefix = "confirm:"
	CancelPrefix  = "cancel:"
)

func isFollow(outcome string) bool {
	return strings.HasPrefix(outcome, ConfirmPrefix) || strings.HasPrefix(outcome, CancelPrefix)
}

// retryPercentiles summarises the retries of the measured attempts (not
// their follow-ups): p50, p99 and max.
func retryPercentiles(samples []Sample, warmup time.Duration) (p50, p99, most int) {
	var n []int
	for _, s := range samples {
		if s.At >= warmup && !isFollow(s.Outcome) {
			n = append(n, s.Retries)
		}
	}
	if len(n) == 0 {
		return 0, 0, 0
	}
	slices.Sort(n)
	at := func(q float64) int { return n[min(len(n)-1, int(q*float64(len(n))))] }
	return at(0.50), at(0.99), n[len(n)-1]
}
