package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxBatch is the default largest batch. Small, so one script call
// holds Redis for tens of microseconds, not milliseconds.
const DefaultMaxBatch = 32

// MaxBatch is the largest batch one script call takes: the script unpacks
// a batch's requestIds and users into one command each, within Lua's stack.
const MaxBatch = 1000

// DefaultMaxInFlight is the default number of script calls one sale may
// have in flight at once. Redis with appendfsync always fsyncs once per
// event-loop turn, for every write that turn took in: batches in flight
// together share that fsync, so the disk's cost per attempt falls as load
// rises, while each script call stays small.
const DefaultMaxInFlight = 4

// maxDropMargin caps how long before its deadline a waiting call is
// dropped rather than sent (the moving average of a script call's time).
const maxDropMargin = 10 * time.Millisecond

// ErrBatcherClosed is returned by Reserve after Close.
var ErrBatcherClosed = errors.New("reserve batcher closed")

// ErrDropped means the request never reached Redis: its caller left or its
// deadline passed (or would pass before an answer could come back) while
// it waited for a batch. Nothing was reserved for it.
var ErrDropped = errors.New("reserve dropped before it reached Redis")

// ErrOutcomeUnknown means the request was sent to Redis but its caller's
// deadline passed before the answer came: the script may have run. A retry
// with the same RequestID answers exactly what was done.
var ErrOutcomeUnknown = errors.New("reserve outcome unknown: the script may have run")

// Batcher coalesces concurrent Reserve calls for the same sale into one
// reserve_batch script call (DESIGN §5 step 6), so Redis cost per attempt
// falls as load rises. Calls arriving while a batch is in flight queue and
// go together, in arrival order, as soon as it returns; a further batch
// goes at once only when a whole one is waiting, up to maxInFlight per
// sale. An idle sale adds no wait: the first call goes at once. Each
// script call is atomic, so the answers are exactly those of the same
// calls made one by one in some order (arrival order within a batch;
// batches in flight together may run in either order: first come, first
// served is best effort, DESIGN §1).
type Batcher struct {
	store    *Store
	max      int
	inFlight int

	ctx    context.Context // cancelled by Close: aborts in-flight batches
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	sales   map[string]*batchQueue
	callDur time.Duration // moving average of a script call's duration; guarded by mu

	onBatch func(sale string, n int) // test hook: runs before each script call
}

// batchQueue is one sale's waiting calls; running counts its flushers.
type batchQueue struct {
	waiting []*batchCall
	running int
}

type batchCall struct {
	req      ReserveRequest
	deadline time.Time // the caller's; zero: none
	done     chan struct{}
	res      ReserveResult
	err      error

	state callState // guarded by Batcher.mu
}

// callState is where a call is: only a waiting call can still be dropped,
// and only a sent one can have an unknown outcome.
type callState uint8

const (
	callWaiting   callState = iota
	callSent                // taken into a batch: the script may run
	callAbandoned           // its caller left while it waited: never sent
)

// NewBatcher returns a Batcher over store sending at most maxBatch
// requests per script call (DefaultMaxBatch if maxBatch < 1, never more
// than MaxBatch) and at most maxInFlight script calls per sale at once
// (DefaultMaxInFlight if < 1).
func NewBatcher(store *Store, maxBatch, maxInFlight int) *Batcher {
	if maxBatch < 1 {
		maxBatch = DefaultMaxBatch
	}
	maxBatch = min(maxBatch, MaxBatch)
	if maxInFlight < 1 {
		maxInFlight = DefaultMaxInFlight
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Batcher{store: store, max: maxBatch, inFlight: maxInFlight, ctx: ctx, cancel: cancel, sales: map[string]*batchQueue{}}
}

// Reserve is Store.Reserve through the batch. ctx's deadline travels with
// the request: a request still waiting for a batch when ctx ends, or whose
// deadline would pass before a script call could answer it, is dropped
// unsent (ErrDropped: nothing reserved). A request sent whose answer has
// not come when ctx ends returns ErrOutcomeUnknown: the script may have
// run, and a retry with the same RequestID gets the same answer.
func (b *Batcher) Reserve(ctx context.Context, sale string, r ReserveRequest) (ReserveResult, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return ReserveResult{}, err
	}
	if err := r.check(); err != nil {
		return ReserveResult{}, err
	}
	c := &batchCall{req: r, done: make(chan struct{})}
	c.deadline, _ = ctx.Deadline()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ReserveResult{}, ErrBatcherClosed
	}
	q := b.sales[sale]
	if q == nil {
		q = &batchQueue{}
		b.sales[sale] = q
	}
	q.waiting = append(q.waiting, c)
	// One flusher whenever there is work; another only for a whole batch
	// that would otherwise wait, so light load still batches.
	if q.running == 0 || (q.running < b.inFlight && len(q.waiting) >= b.max) {
		q.running++
		b.wg.Add(1)
		go b.flush(sale, q)
	}
	b.mu.Unlock()

	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		b.mu.Lock()
		st := c.state
		if st == callWaiting {
			c.state = callAbandoned
		}
		b.mu.Unlock()
		if st == callWaiting {
			return ReserveResult{}, fmt.Errorf("reserve %s: %w (%w)", sale, ErrDropped, ctx.Err())
		}
		// Sent: an answer that has just come wins.
		select {
		case <-c.done:
			return c.res, c.err
		default:
		}
		return ReserveResult{}, fmt.Errorf("reserve %s: %w (%w)", sale, ErrOutcomeUnknown, ctx.Err())
	}
}

// flush sends sale's queue in batches until it is empty, then stops; the
// last flusher to stop gives the sale up so the next call starts anew.
func (b *Batcher) flush(sale string, q *batchQueue) {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		var batch []*batchCall
		n := 0
		// A call whose deadline comes before a script call would answer
		// is dropped now: sent, it would most likely end as an unknown
		// outcome, and a unit held for a buyer who was told "retry".
		// The margin is capped: a stall that made one call slow must not
		// drop every later call unsent (and, with none sent, never learn
		// that Redis is fast again).
		cutoff := time.Now().Add(min(b.callDur, maxDropMargin))
		for _, c := range q.waiting {
			n++
			if c.state == callAbandoned {
				close(c.done)
				continue
			}
			if !c.deadline.IsZero() && c.deadline.Before(cutoff) {
				c.state = callAbandoned
				c.err = fmt.Errorf("reserve %s: %w (deadline before a script call could answer)", sale, ErrDropped)
				close(c.done)
				continue
			}
			c.state = callSent
			batch = append(batch, c)
			if len(batch) == b.max {
				break
			}
		}
		q.waiting = q.waiting[n:]
		if len(batch) == 0 { // the queue is empty (or all of it abandoned)
			q.running--
			if q.running == 0 {
				delete(b.sales, sale)
			}
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()

		if b.onBatch != nil {
			b.onBatch(sale, len(batch))
		}
		reqs := make([]ReserveRequest, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		start := time.Now()
		res, errs, err := b.store.reserveBatch(b.ctx, sale, reqs)
		took := time.Since(start)
		b.mu.Lock()
		b.callDur += (took - b.callDur) / 8
		b.mu.Unlock()
		if err != nil && !NotSent(err) {
			err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		for i, c := range batch {
			if err != nil {
				c.err = err
			} else {
				c.res, c.err = res[i], errs[i]
			}
			close(c.done)
		}
		// Let the callers just answered run before taking the next batch:
		// under steady load they queue again at once, and batches stay full
		// instead of alternating between large and small (measured: mean
		// batch 8 without this, 14 with it, for 16 closed-loop clients).
		runtime.Gosched()
	}
}

// Close stops accepting calls and waits for the batches in flight (their
// Redis calls are cancelled). Safe to call twice or on nil.
func (b *Batcher) Close() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}

// NotSent reports whether err from a Redis call proves the command never
// ran: Redis answered with an error (our scripts fail before any write, or
// not at all), no connection could be had, or the client was closed.
// Anything else (a read timeout, a reset connection) may have come after
// Redis ran the command.
func NotSent(err error) bool {
	if errors.Is(err, ErrOutcomeUnknown) { // ErrNotReplicated: the script ran
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return true
	}
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || errors.Is(err, ErrStoreInput) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Idle reports whether no call is waiting for a batch or in one.
func (b *Batcher) Idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sales) == 0
}

// Queue returns how many batches of sale are in flight and how many calls
// wait for the next one.
func (b *Batcher) Queue(sale string) (running, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.sales[sale]; q != nil {
		return q.running, len(q.waiting)
	}
	return 0, 0
}
