package loadgen

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"
)

func TestOrderVisitsEveryUserOnce(t *testing.T) {
	for _, n := range []int{1, 2, 7, 1000, 1024} {
		pop, err := NewPopulation(n, []RegionWeight{{"eu", 1}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		for seed := uint64(0); seed < 5; seed++ {
			o := pop.NewOrder(seed)
			seen := make([]bool, n)
			for i := range n {
				u := o.At(i)
				if u < 0 || u >= n || seen[u] {
					t.Fatalf("n=%d seed=%d: visit %d gives user %d twice or out of range", n, seed, i, u)
				}
				seen[u] = true
			}
		}
	}
}

func TestPopulationSkew(t *testing.T) {
	regions, err := ParseRegions("eu=6,us=3,ap=1")
	if err != nil {
		t.Fatal(err)
	}
	pop, err := NewPopulation(100_000, regions, 42)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i := range pop.N {
		count[pop.User(i).Region]++
	}
	// Deterministic for the seed; the bounds are wide so that any sound
	// hash passes and a broken split (all in one region) fails.
	for name, want := range map[string]int{"eu": 60_000, "us": 30_000, "ap": 10_000} {
		if got := count[name]; got < want*9/10 || got > want*11/10 {
			t.Errorf("region %s: %d users, want about %d", name, got, want)
		}
	}
	if pop.User(7) != pop.User(7) || pop.User(7).ID != "u7" {
		t.Errorf("user 7 is %+v", pop.User(7))
	}
}

func TestParseRegionsRejectsBadInput(t *testing.T) {
	for _, s := range []string{"", "eu=0", "eu=-1", "eu=x", "eu,eu", "=3"} {
		if _, err := ParseRegions(s); err == nil {
			t.Errorf("ParseRegions(%q) accepted", s)
		}
	}
	if r, err := ParseRegions("eu, us"); err != nil || len(r) != 2 || r[1].Name != "us" || r[1].Weight != 1 {
		t.Errorf("ParseRegions: %v %v", r, err)
	}
}

// countingOp sells stock units, one per user, and remembers what it saw.
type countingOp struct {
	mu    sync.Mutex
	stock int
	users map[string]int
	reqs  map[string]bool
	dupes int
}

func (o *countingOp) Do(_ context.Context, a Attempt) Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.users[a.User.ID]++
	if o.reqs[a.RequestID] {
		o.dupes++
	}
	o.reqs[a.RequestID] = true
	if o.stock == 0 {
		return Result{Outcome: OutcomeSoldOut}
	}
	o.stock--
	return Result{Outcome: OutcomeReserved, Reserved: true, ReservationID: a.RequestID}
}

func (o *countingOp) Follow(_ context.Context, a Attempt, r Result) []Sample {
	return []Sample{{Outcome: ConfirmPrefix + "ok", Latency: time.Microsecond}}
}

// regionSellout reserves for everyone, but answers sold_out to users of
// region out once n of them have tried; it notes when it answered.
type regionSellout struct {
	mu        sync.Mutex
	out       string
	n, seen   int
	firstCall time.Time // when the first attempt started
	firstSold time.Time // when the first sold_out was answered
	nextCall  time.Time // when the attempt after it started
}

func (o *regionSellout) Do(_ context.Context, a Attempt) Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if o.firstCall.IsZero() {
		o.firstCall = now
	}
	if !o.firstSold.IsZero() && o.nextCall.IsZero() {
		o.nextCall = now
	}
	if a.User.Region != o.out {
		return Result{Outcome: OutcomeReserved, Reserved: true}
	}
	if o.seen++; o.seen <= o.n {
		return Result{Outcome: OutcomeReserved, Reserved: true}
	}
	if o.firstSold.IsZero() {
		o.firstSold = time.Now()
	}
	return Result{Outcome: OutcomeSoldOut}
}

func TestSoldOutAfterByRegion(t *testing.T) {
	pop, err := NewPopulation(1000, []RegionWeight{{"eu", 1}, {"us", 1}}, 5)
	if err != nil {
		t.Fatal(err)
	}
	op := &regionSellout{out: "us", n: 50}
	// One worker: attempts run one after another, so the op's clock
	// readings bracket the engine's.
	before := time.Now()
	rep, err := Run(context.Background(), Plan{Workers: 1, Duration: time.Minute, MaxRequests: 1000, Seed: 1}, pop, op, nil)
	if err != nil {
		t.Fatal(err)
	}
	if op.nextCall.IsZero() {
		t.Fatalf("us never sold out twice: %+v", rep.ByOutcome)
	}
	us, ok := rep.SoldOutAfterByRegion["us"]
	if !ok || len(rep.SoldOutAfterByRegion) != 1 {
		t.Fatalf("sold out by region %v: want us only (eu never sold out)", rep.SoldOutAfterByRegion)
	}
	if us != rep.SoldOutAfter {
		t.Errorf("us sold out after %v, the run after %v: the only sold-out region must agree", us, rep.SoldOutAfter)
	}
	// The first sold_out, not a later one: it ended after the op answered
	// it and before the next attempt began. The run started between
	// before and the first attempt, so the bounds hold whatever the
	// machine's speed; recording any later sold_out breaks the upper one.
	if lo, hi := op.firstSold.Sub(op.firstCall), op.nextCall.Sub(before); us < lo || us > hi {
		t.Errorf("us sold out after %v: want between %v (its answer) and %v (the next attempt)", us, lo, hi)
	}
}

func TestRunBoundsAndEachUserOnce(t *testing.T) {
	pop, err := NewPopulation(10_000, []RegionWeight{{"eu", 1}, {"us", 1}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, plan := range []Plan{
		{Workers: 8, Duration: time.Minute, MaxRequests: 500, Seed: 1},
		// Open loop: a high rate so the run ends on MaxRequests, not time.
		{Rate: 1e6, Workers: 10_000, Duration: time.Minute, MaxRequests: 500, Seed: 2},
	} {
		op := &countingOp{stock: 100, users: map[string]int{}, reqs: map[string]bool{}}
		rep, err := Run(context.Background(), plan, pop, op, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Attempts+rep.Dropped != 500 || len(op.reqs)+rep.Dropped != 500 {
			t.Errorf("%s: %d attempts + %d dropped, op saw %d: want 500", rep.Mode, rep.Attempts, rep.Dropped, len(op.reqs))
		}
		for u, n := range op.users {
			if n != 1 {
				t.Errorf("%s: user %s tried %d times", rep.Mode, u, n)
			}
		}
		if op.dupes != 0 {
			t.Errorf("%s: %d request ids reused across attempts", rep.Mode, op.dupes)
		}
		if rep.Reserved != 100 || rep.ByOutcome[OutcomeReserved].Count != 100 || rep.ByOutcome[ConfirmPrefix+"ok"].Count != 100 {
			t.Errorf("%s: reserved %d, by outcome %+v", rep.Mode, rep.Reserved, rep.ByOutcome)
		}
		if rep.All.Count != rep.Attempts || rep.SoldOutAfter == 0 {
			t.Errorf("%s: all %d attempts %d sold out after %v", rep.Mode, rep.All.Count, rep.Attempts, rep.SoldOutAfter)
		}
	}
}

// Runs chained by NextVisit meet only new users, whatever their mode and
// wherever the previous one stopped (bound, deadline or drops).
func TestRunsChainedByNextVisitShareNoUser(t *testing.T) {
	pop, err := NewPopulation(1_000_000, []RegionWeight{{"eu", 1}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	op := &countingOp{stock: 1 << 30, users: map[string]int{}, reqs: map[string]bool{}}
	visit, attempts := 0, 0
	for i, p := range []Plan{
		{Workers: 3, Duration: time.Minute, MaxRequests: 100},
		{Rate: 1e6, Workers: 5, Duration: time.Minute, MaxRequests: 300}, // few slots: many drops
		{Workers: 7, Duration: 20 * time.Millisecond, MaxRequests: 1 << 20},
		{Rate: 1e6, Workers: 10_000, Duration: time.Minute, MaxRequests: 100},
	} {
		p.Seed, p.FirstVisit = 9, visit
		rep, err := Run(context.Background(), p, pop, op, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.NextVisit < visit+rep.Attempts+rep.Dropped || rep.NextVisit > pop.N {
			t.Fatalf("run %d: next visit %d after %d + %d attempts + %d dropped", i, rep.NextVisit, visit, rep.Attempts, rep.Dropped)
		}
		visit, attempts = rep.NextVisit, attempts+rep.Attempts
	}
	if len(op.users) != attempts {
		t.Errorf("%d attempts reached %d users", attempts, len(op.users))
	}
	for u, n := range op.users {
		if n != 1 {
			t.Errorf("user %s tried %d times across runs", u, n)
		}
	}
	if _, err := Run(context.Background(), Plan{Workers: 1, Duration: time.Second, MaxRequests: 1, FirstVisit: pop.N}, pop, op, nil); err == nil {
		t.Error("a run past the last user was accepted")
	}
}

func TestRunStopsWhenUsersRunOut(t *testing.T) {
	pop, err := NewPopulation(50, []RegionWeight{{"eu", 1}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	op := &countingOp{stock: 10, users: map[string]int{}, reqs: map[string]bool{}}
	rep, err := Run(context.Background(), Plan{Workers: 4, Duration: time.Minute, MaxRequests: 1000}, pop, op, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Attempts != 50 || len(op.users) != 50 {
		t.Errorf("%d attempts over %d users: want 50 (each user buys once)", rep.Attempts, len(op.users))
	}
}

func TestPlanCheck(t *testing.T) {
	good := Plan{Workers: 1, Duration: time.Second, MaxRequests: 1}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Plan{
		{Workers: 0, Duration: time.Second, MaxRequests: 1},
		{Workers: 1, Duration: 0, MaxRequests: 1},
		{Workers: 1, Duration: time.Second, MaxRequests: 0},
		{Workers: 1, Duration: time.Second, MaxRequests: 1, Rate: -1},
		{Workers: 1, Duration: time.Second, MaxRequests: 1, Warmup: time.Second},
	} {
		if err := p.Check(); err == nil {
			t.Errorf("plan %+v accepted", p)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 1000)
	for i := range ds {
		ds[i] = time.Duration(1000-i) * time.Millisecond
	}
	l := Summarize(ds)
	if l.P50 != 500*time.Millisecond || l.P99 != 990*time.Millisecond || l.P999 != 999*time.Millisecond || l.Max != time.Second {
		t.Errorf("summary %+v", l)
	}
}

func TestMergeAddsSlices(t *testing.T) {
	a := &Report{Mode: "closed", Window: time.Second, Reserved: 2, SoldOutAfter: 3 * time.Second,
		SoldOutAfterByRegion: map[string]time.Duration{"eu": 3 * time.Second, "us": 4 * time.Second}, Samples: []Sample{
			{Outcome: OutcomeReserved, Latency: 1 * time.Millisecond},
			{Outcome: OutcomeReserved, Latency: 3 * time.Millisecond},
			{Outcome: ConfirmPrefix + "ok", Latency: 50 * time.Millisecond},
		}}
	b := &Report{Mode: "closed", Window: time.Second, SoldOutAfter: time.Second,
		SoldOutAfterByRegion: map[string]time.Duration{"us": time.Second, "ap": 2 * time.Second}, Warmup: time.Second, Samples: []Sample{
			{Outcome: OutcomeSoldOut, At: 2 * time.Second, Latency: 2 * time.Millisecond},
			{Outcome: OutcomeSoldOut, At: 0, Latency: time.Hour}, // in b's warmup: left out
		}}
	m := Merge(a, nil, b)
	if m.Attempts != 3 || m.Throughput != 1.5 || m.Reserved != 2 || m.SoldOutAfter != time.Second {
		t.Errorf("merged %+v", m)
	}
	if want := map[string]time.Duration{"eu": 3 * time.Second, "us": time.Second, "ap": 2 * time.Second}; !maps.Equal(m.SoldOutAfterByRegion, want) {
		t.Errorf("merged sold out by region %v, want the earliest of each: %v", m.SoldOutAfterByRegion, want)
	}
	if m.All.Max != 3*time.Millisecond || m.All.P50 != 2*time.Millisecond {
		t.Errorf("merged latency %+v: the follow-up and b's warmup must not count", m.All)
	}
	if m.ByOutcome[ConfirmPrefix+"ok"].Count != 1 || m.ByOutcome[OutcomeSoldOut].Count != 1 {
		t.Errorf("by outcome %+v", m.ByOutcome)
	}
}

// TestAnswersAndRetries: every answer is counted by code, retries
// included, and retries per attempt are summarised.
func TestAnswersAndRetries(t *testing.T) {
	pop, err := NewPopulation(100, []RegionWeight{{"eu", 1}}, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Attempt k is told quota_pending k%5 times, then reserved.
	op := OpFunc(func(_ context.Context, a Attempt) Result {
		n := a.Seq % 5
		answers := make([]string, 0, n+1)
		for range n {
			answers = append(answers, "quota_pending")
		}
		return Result{Outcome: OutcomeReserved, Reserved: true, Retries: n, Answers: append(answers, OutcomeReserved)}
	})
	rep, err := Run(context.Background(), Plan{Workers: 2, Duration: time.Minute, MaxRequests: 100}, pop, op, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Answers["reserved"] != 100 || rep.Answers["quota_pending"] != 200 {
		t.Fatalf("answers %v: want 100 reserved and 200 quota_pending", rep.Answers)
	}
	if rep.RetriesP50 != 2 || rep.RetriesP99 != 4 || rep.RetriesMax != 4 {
		t.Fatalf("retries p50 %d p99 %d max %d: want 2, 4, 4", rep.RetriesP50, rep.RetriesP99, rep.RetriesMax)
	}
}

// Every attempt is made by a client in 1..Workers, and no client makes
// two attempts at once: in closed loop each worker is one client; in open
// loop an arrival takes a client that is free.
func TestAttemptsHaveOneClientAtATime(t *testing.T) {
	pop, err := NewPopulation(10_000, []RegionWeight{{"eu", 1}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, plan := range []Plan{
		{Workers: 6, Duration: time.Minute, MaxRequests: 300, Seed: 1},
		{Rate: 1e6, Workers: 6, Duration: time.Minute, MaxRequests: 300, Seed: 2},
	} {
		var mu sync.Mutex
		busy := map[int]bool{}
		used := map[int]int{}
		var bad []string
		op := OpFunc(func(_ context.Context, a Attempt) Result {
			mu.Lock()
			if a.Client < 1 || a.Client > plan.Workers || busy[a.Client] {
				bad = append(bad, fmt.Sprintf("attempt %d on client %d (busy %v)", a.Seq, a.Client, busy[a.Client]))
			}
			busy[a.Client] = true
			used[a.Client]++
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			busy[a.Client] = false
			mu.Unlock()
			return Result{Outcome: OutcomeReserved, Reserved: true}
		})
		rep, err := Run(context.Background(), plan, pop, op, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d attempts broke the rule, first: %s", rep.Mode, len(bad), bad[0])
		}
		if rep.Mode == "closed" && len(used) != plan.Workers {
			t.Errorf("closed: %d clients made attempts, want every one of the %d workers", len(used), plan.Workers)
		}
	}
}
