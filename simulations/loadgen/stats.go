package loadgen

import (
	"slices"
	"sort"
	"sync"
	"time"
)

// Sample is one timed operation: its outcome, when it started (offset from
// the run's start) and how long it took, retries and their waits included.
type Sample struct {
	Outcome string
	At      time.Duration
	Latency time.Duration
	Retries int // tries beyond the first (attempts only)
	// LastTry is the last try's own latency, without the tries and
	// waits before it (0: the op does not measure it).
	LastTry time.Duration
}

// recorder collects samples from many goroutines. Sharded so that tens of
// thousands of records a second do not queue on one mutex.
type recorder struct {
	shards [32]struct {
		mu      sync.Mutex
		samples []Sample
		_       [32]byte // keep shards on separate cache lines
	}
}

func (r *recorder) add(shard uint64, s Sample) {
	sh := &r.shards[shard%uint64(len(r.shards))]
	sh.mu.Lock()
	sh.samples = append(sh.samples, s)
	sh.mu.Unlock()
}

func (r *recorder) all() []Sample {
	var out []Sample
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		out = append(out, sh.samples...)
		sh.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// Latency summarises a set of latencies.
type Latency struct {
	Count          int
	P50, P99, P999 time.Duration
	Max            time.Duration
	Mean           time.Duration
}

// latencies gathers measured samples: each by its outcome, and the
// attempts (not their follow-ups) all together.
type latencies struct {
	all []time.Duration
	by  map[string][]time.Duration
}

func (l *latencies) add(s Sample) {
	if l.by == nil {
		l.by = map[string][]time.Duration{}
	}
	l.by[s.Outcome] = append(l.by[s.Outcome], s.Latency)
	if !isFollow(s.Outcome) {
		l.all = append(l.all, s.Latency)
	}
}

// fill sets rep's attempt count and percentiles, overall and by outcome.
func (l *latencies) fill(rep *Report) {
	rep.Attempts = len(l.all)
	rep.All = Summarize(l.all)
	if rep.ByOutcome == nil {
		rep.ByOutcome = map[string]Latency{}
	}
	for k, ds := range l.by {
		rep.ByOutcome[k] = Summarize(ds)
	}
}

// Summarize returns the percentiles of ds (it sorts ds in place).
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Latency{
		Count: len(ds),
		P50:   Percentile(ds, 0.50),
		P99:   Percentile(ds, 0.99),
		P999:  Percentile(ds, 0.999),
		Max:   ds[len(ds)-1],
		Mean:  sum / time.Duration(len(ds)),
	}
}

// Percentile is the nearest-rank percentile q (0..1) of sorted ds.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.999999999)
	i = min(max(i, 1), len(sorted))
	return sorted[i-1]
}
