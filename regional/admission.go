package regional

import (
	"context"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"flashsale/regional/redisstore"
)

// Admission control (DESIGN §5 step 5, issue 14): before any Redis work
// the seller takes a slot from an adaptive concurrency limit, one per sale
// and one for the region's Redis; a request over either limit is answered
// at once with 503 overloaded, touching nothing.
//
// The algorithm is AIMD on measured latency, as in Netflix's
// concurrency-limits AIMDLimit: each request that finishes within the
// latency target while the limit was at least half used adds 1/limit (so
// about one slot per round of the limit), and a request slower than the
// target, or dropped for its deadline, or whose outcome was lost, cuts the
// limit by Backoff, at most once per Target so that one slow batch answered
// to a few hundred callers counts once. A gradient limit (Vegas or
// Gradient2: the ratio of the shortest latency seen to the current one)
// was the alternative; it is steered by a latency floor that fsync and two
// shared cores make noisy, and its target is relative, whereas the
// product's budget is absolute (200 ms). AIMD holds the latency of what
// it admits near an absolute target, so Little's law sets the limit to
// about throughput x Target on its own, with no model of Redis. The
// best-known Go module for this (platinummonkey/go-concurrency-limits)
// is not available here; the limit is forty lines and tested
// deterministically (time is an argument).
//
// Everything between Acquire and Done counts as in flight: waiting in the
// Batcher's queue, the script, the fsync. That is the work the limit
// bounds, so admitted requests finish inside the budget however many
// connections are open.

// LimitConfig tunes one adaptive concurrency limit.
type LimitConfig struct {
	// Initial, Min and Max bound the limit (requests in flight).
	Initial, Min, Max int
	// Target is the latency, from admission to answer, above which the
	// limit shrinks: a fraction of the budget, leaving room for the HTTP
	// path and the network.
	Target time.Duration
	// Backoff multiplies the limit on a slow or failed request (0 < b < 1).
	Backoff float64
	// Queue is the longest a request waits for a slot when the limits
	// are full, in a queue no longer than the Redis limit (0: shed at
	// once). See admission.wait.
	Queue time.Duration
}

// DefaultLimitConfig suits one sale on one Redis with appendfsync always:
// on two cores it settles at a few hundred (about 10,000 reservations/s x
// 50 ms). The floor is what keeps the Batcher's batches full
// (DefaultMaxInFlight x DefaultMaxBatch = 128): below it, fewer units per
// fsync, so a limit cut by a CPU stall (the Go scheduler, not Redis)
// would lower the throughput it is meant to protect.
func DefaultLimitConfig() LimitConfig {
	return LimitConfig{Initial: 256, Min: redisstore.DefaultMaxInFlight * redisstore.DefaultMaxBatch, Max: 4096, Target: 50 * time.Millisecond, Backoff: 0.9,
		Queue: 50 * time.Millisecond}
}

func (c LimitConfig) valid() bool {
	return c.Min >= 1 && c.Initial >= c.Min && c.Max >= c.Initial && c.Target > 0 && c.Backoff > 0 && c.Backoff < 1 && c.Queue >= 0
}

// ConcLimit is an adaptive concurrency limit (AIMD on latency). Safe for
// concurrent use.
type ConcLimit struct {
	cfg LimitConfig

	mu       sync.Mutex
	limit    float64
	inFlight int
	lastCut  time.Time
}

// NewConcLimit returns a limit starting at cfg.Initial; an invalid cfg
// (see LimitConfig) is replaced by DefaultLimitConfig.
func NewConcLimit(cfg LimitConfig) *ConcLimit {
	if !cfg.valid() {
		cfg = DefaultLimitConfig()
	}
	return &ConcLimit{cfg: cfg, limit: float64(cfg.Initial)}
}

// Ticket is one admitted request; hand it back to Done.
type Ticket struct {
	inFlight int // in flight when admitted, this one included
}

// Acquire admits one request if fewer than the limit are in flight.
func (l *ConcLimit) Acquire() (Ticket, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight >= int(l.limit) {
		return Ticket{}, false
	}
	l.inFlight++
	return Ticket{inFlight: l.inFlight}, true
}

// Cancel gives a slot back without a sample (the request did no work).
func (l *ConcLimit) Cancel(Ticket) {
	l.mu.Lock()
	l.inFlight--
	l.mu.Unlock()
}

// Done gives the slot back with what the request measured: its latency
// from admission to answer, whether it failed for load (dropped at its
// deadline, outcome lost, store timeout), and the time it ended.
func (l *ConcLimit) Done(t Ticket, latency time.Duration, failed bool, end time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if failed || latency > l.cfg.Target {
		if end.Sub(l.lastCut) >= l.cfg.Target {
			l.limit = math.Max(float64(l.cfg.Min), l.limit*l.cfg.Backoff)
			l.lastCut = end
		}
		return
	}
	// Grow only a limit that is in use: an idle seller must not drift up
	// to Max and then admit a whole surge at once.
	if 2*t.inFlight >= int(l.limit) {
		l.limit = math.Min(float64(l.cfg.Max), l.limit+1/l.limit)
	}
}

// Limit is the current limit.
func (l *ConcLimit) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit)
}

// InFlight is the number of requests admitted and not yet done.
func (l *ConcLimit) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// retryHint is how long a shed buyer is told to wait. A fixed hint does
// not fit: 8,000 clients told "1 s" come back at 8,000/s, and on two cores
// answering them costs as much CPU as the reservations it protects; told
// "10 s", they leave the seller idle. Nor does one hint for everyone shed
// in a window, scaled by the shed ratio (the first version: sqrt(shed /
// admitted) every 250 ms): a surge's first windows shed nearly everyone,
// the hint doubled to its 5 s cap within a second, and 8,000 closed-loop
// clients then slept so long that the seller answered 850/s, a tenth of
// its capacity.
//
// The hint aims the offered load at the capacity instead: shed buyers
// are booked into a virtual queue drained at the seller's rate, and each
// is told the queue's tail, which then moves on by 1/rate: a burst of N
// shed at once is told to come back spread over N/rate, the time the
// seller takes to serve them once (in-flight clients / capacity). Within
// [min, max]; the jitter of the answer (±50%) smooths the rest.
//
// The rate is the admissions per second of 250 ms windows. It rises at
// once to a faster window and falls slowly (by an eighth of the gap per
// window, so over about 2 s), and only on windows in which the seller was
// saturated (someone queued or shed: admissions per second were then what
// it could take; in any other window they only say how much was asked).
// The bias is deliberate: the windows of a surge itself are slow (the
// seller spends its CPU refusing), and a rate taken from them (the second
// version: the mean of the last two saturated windows) told the buyers of
// an 8,000-connection surge to come back over the 5 s cap while the
// seller sat idle (in flight 0 for 6 s, measured). A rate too high costs
// less: buyers who come back early queue briefly or are booked again
// behind the tail.
//
// The queue cannot see the buyers waiting in its sockets: at 8,000
// closed-loop connections each shed buyer was booked behind only the
// others shed in the last moments and told 80-550 ms, while 8,000
// requests sat in flight and every answer, sheds included, took 0.8 s
// (measured). So the tail is never booked nearer than the time the seller
// takes to serve once every client seen recently (clients, a count of
// connections that sent a request in the last clientWindow): a shed
// buyer comes back after all of them had their turn.
type retryHint struct {
	min, max, window time.Duration
	// clients counts the connections that sent a request recently; nil:
	// not known (the tail alone).
	clients func() int
	known   int // clients() at the last window

	mu           sync.Mutex
	rate         float64   // admissions per second; 0: not measured yet
	tail         time.Time // the virtual queue's end
	start        time.Time
	shed, admits int
	saturated    bool // someone queued or was shed in this window
}

func newRetryHint(minD, maxD, window time.Duration) *retryHint {
	return &retryHint{min: minD, max: maxD, window: window}
}

// admitted counts an admitted request.
func (h *retryHint) admitted(now time.Time) {
	h.mu.Lock()
	h.roll(now)
	h.admits++
	h.mu.Unlock()
}

// queued notes a request that waited for a slot: the seller is saturated.
func (h *retryHint) queued(now time.Time) {
	h.mu.Lock()
	h.roll(now)
	h.saturated = true
	h.mu.Unlock()
}

// shedNow counts a shed request, books it into the queue and returns the
// hint to give it.
func (h *retryHint) shedNow(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.roll(now)
	h.shed++
	h.saturated = true
	if h.tail.Before(now) {
		h.tail = now
	}
	if h.rate > 0 {
		if floor := now.Add(time.Duration(float64(h.known) / h.rate * float64(time.Second))); h.tail.Before(floor) {
			h.tail = floor
		}
		h.tail = h.tail.Add(time.Duration(float64(time.Second) / h.rate))
	}
	// The tail is never booked beyond max: past it the buyers are told
	// max anyway, and a queue of the unservable would outlive the surge.
	h.tail = minTime(h.tail, now.Add(h.max))
	return h.wait(now)
}

func (h *retryHint) wait(now time.Time) time.Duration {
	return min(h.max, max(h.min, h.tail.Sub(now)))
}

func (h *retryHint) roll(now time.Time) {
	if h.start.IsZero() {
		h.start = now
		return
	}
	d := now.Sub(h.start)
	if d < h.window {
		return
	}
	if h.admits > 0 {
		r := float64(h.admits) / d.Seconds()
		switch {
		case r > h.rate:
			h.rate = r
		case h.saturated:
			h.rate += (r - h.rate) / 8
		}
	}
	h.start, h.shed, h.admits, h.saturated = now, 0, 0, false
	if h.clients != nil {
		h.known = h.clients()
	}
}

// current is the wait a buyer refused now would be told, without booking.
func (h *retryHint) current() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wait(time.Now())
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// admission holds the seller's limits: one for its Redis, one per sale,
// and the queue of requests waiting for a slot.
type admission struct {
	cfg   LimitConfig
	redis *ConcLimit
	hint  *retryHint

	mu    sync.Mutex
	sales map[string]*ConcLimit

	qmu   sync.Mutex
	queue []chan struct{} // waiters, oldest first; each woken once by a send
}

// newAdmission builds the limits; clients (nil: unknown) counts the
// connections that sent a request recently (see retryHint).
func newAdmission(cfg LimitConfig, clients func() int) *admission {
	h := newRetryHint(50*time.Millisecond, 5*time.Second, 250*time.Millisecond)
	h.clients = clients
	return &admission{cfg: cfg, redis: NewConcLimit(cfg), hint: h, sales: map[string]*ConcLimit{}}
}

// clientWindow is how recently a connection must have sent a request to
// count among the clients the retry hint makes room for: longer than the
// longest hint, so that buyers asleep on one still count.
const clientWindow = 6 * time.Second

// connTracker knows when each open connection last sent a request
// (http.Server.ConnState, called on every request: a connection's own
// timestamp is updated without a shared lock).
type connTracker struct {
	last sync.Map // net.Conn -> *atomic.Int64, unix ns of its last request
}

func newConnTracker() *connTracker { return &connTracker{} }

func (t *connTracker) state(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive:
		at, ok := t.last.Load(c)
		if !ok {
			at, _ = t.last.LoadOrStore(c, new(atomic.Int64))
		}
		at.(*atomic.Int64).Store(time.Now().UnixNano())
	case http.StateClosed, http.StateHijacked:
		t.last.Delete(c)
	}
}

// recent counts the connections that sent a request within clientWindow.
func (t *connTracker) recent() int {
	since := time.Now().Add(-clientWindow).UnixNano()
	n := 0
	t.last.Range(func(_, at any) bool {
		if at.(*atomic.Int64).Load() > since {
			n++
		}
		return true
	})
	return n
}

func (a *admission) sale(id string) *ConcLimit {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.sales[id]
	if l == nil {
		l = NewConcLimit(a.cfg)
		a.sales[id] = l
	}
	return l
}

// slot is one admitted request's hold on its limits.
type slot struct {
	a        *admission
	sale     *ConcLimit // nil for work of no one sale
	st, rt   Ticket
	start    time.Time
	released bool
}

// acquire takes a slot of the sale's limit (none for sale "") and of the
// Redis limit, or nothing.
func (a *admission) acquire(sale string, now time.Time) (*slot, bool) {
	s := &slot{a: a, start: now}
	if sale != "" {
		s.sale = a.sale(sale)
		t, ok := s.sale.Acquire()
		if !ok {
			return nil, false
		}
		s.st = t
	}
	t, ok := a.redis.Acquire()
	if !ok {
		if s.sale != nil {
			s.sale.Cancel(s.st)
		}
		return nil, false
	}
	s.rt = t
	return s, true
}

// enter admits one request for sale ("" for Redis work of no one sale) or
// reports false with how long the caller should wait. It never waits.
func (a *admission) enter(sale string, now time.Time) (*slot, time.Duration, bool) {
	s, ok := a.acquire(sale, now)
	if !ok {
		return nil, a.hint.shedNow(now), false
	}
	a.hint.admitted(now)
	return s, 0, true
}

// wait admits one request like enter, but when the limits are full it
// waits for a slot, up to cfg.Queue and while ctx lives, in a FIFO queue
// no longer than the Redis limit; over that, or at the end of the wait,
// it sheds. Why wait at all: a closed-loop client that gets its answer
// and asks again at once, or a shed one back from its hint a little
// early, would otherwise be shed for a fullness that lasts a batch (a few
// ms), then cost a second request after its hint: measured at 8,000
// connections on two cores, the sheds took as much CPU as the
// reservations. The wait is bounded so that an admitted request still
// answers inside the budget: about one round of the limit, the latency
// the limit aims at.
//
// The queue is first come, first served: while anyone waits a newcomer
// queues behind, and each slot given back wakes the oldest waiter. A
// waiter woken by a slot of another sale while its own sale is full goes
// back to the head and waits for the next.
func (a *admission) wait(ctx context.Context, sale string) (*slot, time.Duration, bool) {
	now := time.Now()
	a.qmu.Lock()
	if len(a.queue) == 0 {
		if s, ok := a.acquire(sale, now); ok {
			a.qmu.Unlock()
			a.hint.admitted(now)
			return s, 0, true
		}
	}
	if a.cfg.Queue <= 0 || len(a.queue) >= a.redis.Limit() || ctx.Err() != nil {
		a.qmu.Unlock()
		return nil, a.hint.shedNow(now), false
	}
	ch := make(chan struct{}, 1)
	a.queue = append(a.queue, ch)
	a.qmu.Unlock()
	a.hint.queued(now)

	t := time.NewTimer(a.cfg.Queue)
	defer t.Stop()
	for {
		select {
		case <-ch:
			now := time.Now()
			a.qmu.Lock()
			s, ok := a.acquire(sale, now)
			if !ok {
				a.queue = slices.Insert(a.queue, 0, ch)
			}
			a.qmu.Unlock()
			if ok {
				a.hint.admitted(now)
				return s, 0, true
			}
		case <-t.C:
			return nil, a.leave(ch), false
		case <-ctx.Done():
			return nil, a.leave(ch), false
		}
	}
}

// leave takes a waiter that gave up out of the queue and sheds it. One
// already popped holds a wake-up it will not use: it goes to the next.
func (a *admission) leave(ch chan struct{}) time.Duration {
	a.qmu.Lock()
	i := slices.Index(a.queue, ch)
	if i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
	}
	a.qmu.Unlock()
	if i < 0 {
		a.wake()
	}
	return a.hint.shedNow(time.Now())
}

// wake hands a freed slot's turn to the oldest waiter, if any. The send
// is made under qmu, so a waiter that finds itself out of the queue
// knows its wake-up is in its channel.
func (a *admission) wake() {
	a.qmu.Lock()
	if len(a.queue) > 0 {
		ch := a.queue[0]
		a.queue = a.queue[1:]
		ch <- struct{}{}
	}
	a.qmu.Unlock()
}

// saturated reports whether a request for Redis work would be shed now
// whatever its sale: every Redis slot is taken and the queue is full (or
// there is none).
func (a *admission) saturated() bool {
	limit := a.redis.Limit()
	if a.redis.InFlight() < limit {
		return false
	}
	return a.cfg.Queue <= 0 || a.waiting() >= limit
}

// waiting is the number of requests queued for a slot.
func (a *admission) waiting() int {
	a.qmu.Lock()
	defer a.qmu.Unlock()
	return len(a.queue)
}

// done releases the slot with its sample; failed: the request failed for
// load. Safe to call twice (the second does nothing).
func (s *slot) done(failed bool, now time.Time) {
	if s == nil || s.released {
		return
	}
	s.released = true
	lat := now.Sub(s.start)
	if s.sale != nil {
		s.sale.Done(s.st, lat, failed, now)
	}
	s.a.redis.Done(s.rt, lat, failed, now)
	s.a.wake()
}

// cancel releases the slot without a sample: the request did no Redis
// work, or its latency says nothing of Redis (a hold for quota that
// timed out). Safe to call twice, and after done.
func (s *slot) cancel() {
	if s == nil || s.released {
		return
	}
	s.released = true
	if s.sale != nil {
		s.sale.Cancel(s.st)
	}
	s.a.redis.Cancel(s.rt)
	s.a.wake()
}

// restart starts the slot's latency sample anew: what came before (a
// hold for quota) was slow on purpose, not because of Redis.
func (s *slot) restart(now time.Time) { s.start = now }

// force admits Redis work that must not be shed (a confirm whose payment
// went through): it counts in flight even over the limit.
func (a *admission) force() *slot {
	a.redis.mu.Lock()
	a.redis.inFlight++
	t := Ticket{inFlight: a.redis.inFlight}
	a.redis.mu.Unlock()
	return &slot{a: a, rt: t, start: time.Now()}
}
