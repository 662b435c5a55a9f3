package regional

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestConcLimitAdmitsUpToLimit(t *testing.T) {
	l := NewConcLimit(LimitConfig{Initial: 3, Min: 1, Max: 10, Target: 50 * time.Millisecond, Backoff: 0.5})
	var ts []Ticket
	for range 3 {
		tk, ok := l.Acquire()
		if !ok {
			t.Fatal("refused under the limit")
		}
		ts = append(ts, tk)
	}
	if _, ok := l.Acquire(); ok {
		t.Fatal("admitted over the limit")
	}
	l.Cancel(ts[0])
	if _, ok := l.Acquire(); !ok {
		t.Fatal("refused after a slot was given back")
	}
	if got := l.InFlight(); got != 3 {
		t.Fatalf("in flight %d, want 3", got)
	}
}

func TestConcLimitCutsOncePerTarget(t *testing.T) {
	target := 50 * time.Millisecond
	l := NewConcLimit(LimitConfig{Initial: 100, Min: 10, Max: 1000, Target: target, Backoff: 0.5})
	t0 := time.Unix(1000, 0)
	// Forty slow answers in the same instant (one batch): one cut.
	for range 40 {
		tk, _ := l.Acquire()
		l.Done(tk, 2*target, false, t0)
	}
	if got := l.Limit(); got != 50 {
		t.Fatalf("limit %d after one slow batch, want 50", got)
	}
	// A failure one target later cuts again; the floor holds.
	tk, _ := l.Acquire()
	l.Done(tk, time.Millisecond, true, t0.Add(target))
	if got := l.Limit(); got != 25 {
		t.Fatalf("limit %d after a failure, want 25", got)
	}
	for i := range 20 {
		tk, _ := l.Acquire()
		l.Done(tk, 0, true, t0.Add(time.Duration(i+2)*target))
	}
	if got := l.Limit(); got != 10 {
		t.Fatalf("limit %d, want the floor 10", got)
	}
}

func TestConcLimitGrowsOnlyWhenUsed(t *testing.T) {
	l := NewConcLimit(LimitConfig{Initial: 10, Min: 1, Max: 12, Target: 50 * time.Millisecond, Backoff: 0.5})
	now := time.Unix(1000, 0)
	// One request at a time uses a tenth of the limit: no growth.
	for range 100 {
		tk, _ := l.Acquire()
		l.Done(tk, time.Millisecond, false, now)
	}
	if got := l.Limit(); got != 10 {
		t.Fatalf("idle limit grew to %d", got)
	}
	// Rounds of the whole limit in flight, all fast: about one slot per
	// round, up to Max.
	for range 50 {
		n := l.Limit()
		ts := make([]Ticket, 0, n)
		for range n {
			tk, ok := l.Acquire()
			if !ok {
				t.Fatal("refused under the limit")
			}
			ts = append(ts, tk)
		}
		for _, tk := range ts {
			l.Done(tk, time.Millisecond, false, now)
		}
	}
	if got := l.Limit(); got != 12 {
		t.Fatalf("limit %d after fast full rounds, want Max 12", got)
	}
}

func TestConcLimitBadConfigDefaults(t *testing.T) {
	l := NewConcLimit(LimitConfig{Initial: 5, Min: 10})
	if got, want := l.Limit(), DefaultLimitConfig().Initial; got != want {
		t.Fatalf("limit %d, want the default %d", got, want)
	}
}

// Shed buyers are booked into a virtual queue drained at the admitted
// rate measured while saturated: a burst is told to come back spread over
// the time the seller takes to serve it once, not all after one wait.
func TestRetryHintQueuesAtTheAdmittedRate(t *testing.T) {
	h := newRetryHint(50*time.Millisecond, 5*time.Second, 250*time.Millisecond)
	now := time.Unix(1000, 0)
	// No rate measured yet: the floor.
	if got := h.shedNow(now); got != 50*time.Millisecond {
		t.Fatalf("hint %v before any measurement, want the floor", got)
	}
	// A saturated window: 1,000 admitted in 250 ms (4,000/s), some shed.
	for range 1000 {
		h.admitted(now)
	}
	now = now.Add(250 * time.Millisecond)
	h.admitted(now) // rolls the window
	// 8,000 shed at once come back spread over 8,000 / 4,000/s = 2 s.
	var hints []time.Duration
	for range 8000 {
		hints = append(hints, h.shedNow(now))
	}
	if hints[0] != 50*time.Millisecond {
		t.Fatalf("first of the burst told %v, want the floor", hints[0])
	}
	if d := hints[3999] - time.Second; d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("4,000th of the burst told %v, want 1 s", hints[3999])
	}
	if d := hints[7999] - 2*time.Second; d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("last of the burst told %v, want 2 s", hints[7999])
	}
	// The queue drains with time.
	now = now.Add(1500 * time.Millisecond)
	if got := h.shedNow(now); got > 600*time.Millisecond || got < 400*time.Millisecond {
		t.Fatalf("hint %v 1.5 s later, want about 0.5 s", got)
	}
	// Never beyond the cap, however long the queue.
	for range 100000 {
		h.shedNow(now)
	}
	if got := h.shedNow(now); got != 5*time.Second {
		t.Fatalf("hint %v, want the 5 s cap", got)
	}
}

func TestAdmissionPerSaleAndRedis(t *testing.T) {
	a := newAdmission(LimitConfig{Initial: 2, Min: 1, Max: 2, Target: time.Second, Backoff: 0.5}, nil)
	now := time.Unix(1000, 0)
	s1, _, ok1 := a.enter("a", now)
	s2, _, ok2 := a.enter("a", now)
	if !ok1 || !ok2 {
		t.Fatal("refused under the limits")
	}
	if _, wait, ok := a.enter("a", now); ok || wait <= 0 {
		t.Fatalf("sale a over its limit: admitted %v, wait %v", ok, wait)
	}
	// Sale b has room but Redis has none.
	if _, _, ok := a.enter("b", now); ok {
		t.Fatal("admitted over the Redis limit")
	}
	if got := a.sale("b").InFlight(); got != 0 {
		t.Fatalf("sale b holds %d after a Redis refusal, want 0", got)
	}
	s1.done(false, now)
	s1.done(false, now) // twice is once
	if got := a.redis.InFlight(); got != 1 {
		t.Fatalf("redis in flight %d, want 1", got)
	}
	if _, _, ok := a.enter("b", now); !ok {
		t.Fatal("sale b refused with Redis room")
	}
	s2.done(false, now)
}

// waitResult is what admission.wait answered.
type waitResult struct {
	s    *slot
	hint time.Duration
	ok   bool
}

func waitAsync(a *admission, ctx context.Context, sale string) <-chan waitResult {
	c := make(chan waitResult, 1)
	go func() {
		s, h, ok := a.wait(ctx, sale)
		c <- waitResult{s, h, ok}
	}()
	return c
}

// A request over the limit waits for a slot, in arrival order, in a
// queue no longer than the limit; one that gives up is shed with a hint.
func TestAdmissionWaitQueue(t *testing.T) {
	// Queue: an hour, so that only a freed slot or the client ends a wait.
	a := newAdmission(LimitConfig{Initial: 2, Min: 2, Max: 2, Target: time.Hour, Backoff: 0.5, Queue: time.Hour}, nil)
	ctx := context.Background()
	s0, _, ok0 := a.wait(ctx, "a")
	s1, _, ok1 := a.wait(ctx, "a")
	if !ok0 || !ok1 {
		t.Fatal("refused under the limit")
	}
	first := waitAsync(a, ctx, "a")
	waitFor(t, func() bool { return a.waiting() == 1 })
	ctx2, leave := context.WithCancel(ctx)
	second := waitAsync(a, ctx2, "a")
	waitFor(t, func() bool { return a.waiting() == 2 })
	// The queue is no longer than the limit (2): full.
	if _, hint, ok := a.wait(ctx, "a"); ok || hint <= 0 {
		t.Fatalf("a third over a full queue: admitted %v, hint %v; want shed with a hint", ok, hint)
	}
	s0.done(false, time.Now())
	r := <-first
	if !r.ok {
		t.Fatal("the oldest waiter was not admitted when the slot was given back")
	}
	select {
	case r2 := <-second:
		t.Fatalf("the second waiter answered %+v while the slot was held", r2)
	default:
	}
	leave()
	if r2 := <-second; r2.ok || r2.hint <= 0 {
		t.Fatalf("a waiter whose client left: admitted %v, hint %v; want shed with a hint", r2.ok, r2.hint)
	}
	if a.waiting() != 0 {
		t.Fatalf("%d still queued", a.waiting())
	}
	r.s.cancel()
	s1.done(false, time.Now())
	if a.redis.InFlight() != 0 || a.sale("a").InFlight() != 0 {
		t.Fatalf("in flight redis %d sale %d after every slot was given back", a.redis.InFlight(), a.sale("a").InFlight())
	}
}

// Queue 0 sheds at once, as before the queue.
func TestAdmissionNoQueueShedsAtOnce(t *testing.T) {
	a := newAdmission(LimitConfig{Initial: 1, Min: 1, Max: 1, Target: time.Hour, Backoff: 0.5}, nil)
	if _, _, ok := a.wait(context.Background(), "a"); !ok {
		t.Fatal("refused under the limit")
	}
	if _, hint, ok := a.wait(context.Background(), "a"); ok || hint <= 0 {
		t.Fatalf("over the limit with no queue: admitted %v, hint %v", ok, hint)
	}
}

// A waiter that gives up just as a slot's wake-up reached it passes the
// wake-up on: a freed slot is never left unused while others wait.
func TestAdmissionLeavePassesWakeOn(t *testing.T) {
	a := newAdmission(LimitConfig{Initial: 1, Min: 1, Max: 1, Target: time.Hour, Backoff: 0.5, Queue: time.Hour}, nil)
	c1, c2 := make(chan struct{}, 1), make(chan struct{}, 1)
	a.queue = append(a.queue, c1, c2)
	a.wake() // c1's turn, which c1 will not take
	a.leave(c1)
	select {
	case <-c2:
	default:
		t.Fatal("the next waiter was not woken")
	}
	if a.waiting() != 0 {
		t.Fatalf("%d still queued", a.waiting())
	}
}

// The hint's rate rises at once to a faster window and falls slowly, and
// only when the seller was saturated.
func TestRetryHintRateRisesFastFallsSlowly(t *testing.T) {
	h := newRetryHint(50*time.Millisecond, 5*time.Second, 250*time.Millisecond)
	now := time.Unix(1000, 0)
	window := func(admits int, saturated bool) {
		for range admits {
			h.admitted(now)
		}
		if saturated {
			h.queued(now)
		}
		now = now.Add(250 * time.Millisecond)
		h.admitted(now) // rolls the window
	}
	h.admitted(now)
	window(1000, false) // 4,000/s while not saturated: a lower bound, taken
	if h.rate < 3999 || h.rate > 4005 {
		t.Fatalf("rate %.0f, want 4,000/s", h.rate)
	}
	window(100, false) // slow but not saturated: says nothing of capacity
	if h.rate < 3999 {
		t.Fatalf("rate %.0f fell on an unsaturated window", h.rate)
	}
	window(100, true) // a surge's slow window: an eighth of the way down
	if h.rate < 3400 || h.rate > 3600 {
		t.Fatalf("rate %.0f after one slow saturated window, want about 3,550/s", h.rate)
	}
}

// The queue makes room for every client seen recently, not only for those
// shed just now: with 8,000 connections asking and 4,000 admitted per
// second, the first buyer shed is told 2 s, the time the seller takes to
// serve each of them once. Without the count (the negative control) it is
// told the floor, and 8,000 requests stay in flight.
func TestRetryHintMakesRoomForRecentClients(t *testing.T) {
	for _, tc := range []struct {
		clients func() int
		want    time.Duration
	}{{func() int { return 8000 }, 2 * time.Second}, {nil, 50 * time.Millisecond}} {
		h := newRetryHint(50*time.Millisecond, 5*time.Second, 250*time.Millisecond)
		h.clients = tc.clients
		now := time.Unix(1000, 0)
		for range 1000 {
			h.admitted(now)
		}
		now = now.Add(250 * time.Millisecond)
		h.admitted(now) // rolls the window: 4,000/s, and counts the clients
		if got := h.shedNow(now); got < tc.want || got > tc.want+time.Millisecond {
			t.Fatalf("clients %v: first shed told %v, want %v", tc.clients != nil, got, tc.want)
		}
	}
}

// The connection tracker counts the connections that sent a request, and
// forgets closed ones.
func TestConnTrackerCountsRecentClients(t *testing.T) {
	tr := newConnTracker()
	a, b := &net.TCPConn{}, &net.UDPConn{}
	tr.state(a, http.StateNew)
	if n := tr.recent(); n != 0 {
		t.Fatalf("%d clients before any request", n)
	}
	tr.state(a, http.StateActive)
	tr.state(b, http.StateActive)
	tr.state(a, http.StateIdle)
	if n := tr.recent(); n != 2 {
		t.Fatalf("%d clients after two requests, want 2", n)
	}
	tr.state(b, http.StateClosed)
	if n := tr.recent(); n != 1 {
		t.Fatalf("%d clients after one closed, want 1", n)
	}
}
