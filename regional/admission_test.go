package regional

import (
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
	a := newAdmission(LimitConfig{Initial: 2, Min: 1, Max: 2, Target: time.Second, Backoff: 0.5})
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
