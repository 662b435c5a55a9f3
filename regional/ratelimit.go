package regional

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// limiter is a set of token buckets keyed by user or client IP. It forgets
// a bucket once it would be full again, so memory follows the number of
// keys active within burst/rate, not every key ever seen.
type limiter struct {
	rate  float64 // tokens per second; 0 disables the limiter
	burst float64
	// share divides rate and burst among the region's live sellers
	// (setShare), so that the limit holds per region: a client spraying
	// every seller gets the configured rate in all.
	share  atomic.Int64
	idle   time.Duration // a bucket untouched this long is full again
	seed   maphash.Seed
	shards [64]limShard
}

type limShard struct {
	mu      sync.Mutex
	m       map[string]bucket
	sweepAt int // sweep idle buckets when the map reaches this size
}

// bucket is held by value and without a time.Time (which holds a pointer):
// during a flash sale the maps hold every buyer of the last few seconds,
// and the garbage collector then has one pointer per bucket to follow
// (its key), not three.
type bucket struct {
	tokens float64
	last   int64 // unix ns
}

const minSweepAt = 1024

func newLimiter(rate float64, burst int) *limiter {
	l := &limiter{rate: rate, burst: float64(burst), seed: maphash.MakeSeed()}
	if rate > 0 {
		l.idle = time.Duration(float64(burst) / rate * float64(time.Second))
	}
	for i := range l.shards {
		l.shards[i].m = map[string]bucket{}
		l.shards[i].sweepAt = minSweepAt
	}
	return l
}

// allow takes one token for key. When none is left it says how long until
// one will be.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	sh := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := float64(max(1, l.share.Load()))
	rate, burst := l.rate/n, max(1, l.burst/n)
	ns := now.UnixNano()
	b, ok := sh.m[key]
	if !ok {
		if len(sh.m) >= sh.sweepAt {
			sh.sweep(ns, l.idle)
		}
		b = bucket{tokens: burst, last: ns}
	}
	if elapsed := ns - b.last; elapsed > 0 {
		b.tokens = min(burst, b.tokens+float64(elapsed)/1e9*rate)
		b.last = ns
	}
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	sh.m[key] = b
	if allowed {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// sweep drops buckets that have refilled; the next sweep waits until the
// map doubles, so sweeping costs O(1) amortised per new key.
func (sh *limShard) sweep(now int64, idle time.Duration) {
	for k, b := range sh.m {
		if time.Duration(now-b.last) >= idle {
			delete(sh.m, k)
		}
	}
	sh.sweepAt = max(minSweepAt, 2*len(sh.m))
}

// size is the number of buckets held (for tests).
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].m)
		l.shards[i].mu.Unlock()
	}
	return n
}

// setShare makes this seller enforce 1/n of the limit: n is the number of
// live sellers in the region (gossip membership). The buckets keep their
// tokens; the new rate applies from the next request.
func (l *limiter) setShare(n int) {
	if l != nil {
		l.share.Store(int64(max(1, n)))
	}
}
