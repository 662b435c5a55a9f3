package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/quota/layout"
)

// Demand is how the rebalancer learns where buyers are. Each seller counts
// buy attempts per sale in memory, including those answered sold-out from
// memory (a sold-out region with buyers is exactly where quota should go),
// and adds its counts to the sale's `attempts` counter in the region's Redis
// a few times a second. The region agent reads that counter and turns it
// into a rate (DemandMeter). Counting costs one atomic add on the hot path.
type Demand struct {
	counts sync.Map // sale -> *atomic.Int64
}

// Count records one buy attempt for sale.
func (d *Demand) Count(sale string) { d.add(sale, 1) }

// Flush adds the attempts counted since the last flush to Redis. Counts
// that fail to flush are kept for the next one.
func (d *Demand) Flush(ctx context.Context, rdb redis.UniversalClient) error {
	var firstErr error
	for sale, n := range d.Drain() {
		if err := rdb.IncrBy(ctx, layout.SaleKey(sale, "attempts"), n).Err(); err != nil {
			d.add(sale, n)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// Drain takes the attempts counted since the last drain or flush, per
// sale (sales without any are left out).
func (d *Demand) Drain() map[string]int64 {
	out := map[string]int64{}
	d.counts.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Swap(0); n != 0 {
			out[k.(string)] = n
		}
		return true
	})
	return out
}

func (d *Demand) add(sale string, n int64) {
	c, ok := d.counts.Load(sale)
	if !ok {
		c, _ = d.counts.LoadOrStore(sale, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(n)
}

// DemandMeter turns a region's per-sale attempts counts into rates: the
// attempts per second between two readings, smoothed. The agent calls Rate
// once per report. The count is the Redis counter the sellers flush to
// (NewDemandMeter) or, in a gossiping region, the sum of the live sellers'
// gossiped counts (NewDemandMeterFunc); a count that went down (a seller
// left) starts the rate afresh.
type DemandMeter struct {
	count func(ctx context.Context, sale string) (int64, error)
	now   func() time.Time

	mu   sync.Mutex
	last map[string]meterSample
}

type meterSample struct {
	count int64
	at    time.Time
	rate  float64
}

// demandSmoothing weighs the newest interval's rate against the history.
const demandSmoothing = 0.5

// minRate is the smoothed rate under which, with no attempt in the last
// interval, demand is reported as none: halving never reaches zero, and a
// region reporting a trickle would keep stock its buyers no longer want.
const minRate = 0.5

// NewDemandMeter reads attempts counters from rdb; now nil means time.Now.
func NewDemandMeter(rdb redis.UniversalClient, now func() time.Time) *DemandMeter {
	return NewDemandMeterFunc(func(ctx context.Context, sale string) (int64, error) {
		n, err := rdb.Get(ctx, layout.SaleKey(sale, "attempts")).Int64()
		if err == redis.Nil {
			return 0, nil
		}
		return n, err
	}, now)
}

// NewDemandMeterFunc reads a sale's cumulative attempts from count.
func NewDemandMeterFunc(count func(ctx context.Context, sale string) (int64, error), now func() time.Time) *DemandMeter {
	if now == nil {
		now = time.Now
	}
	return &DemandMeter{count: count, now: now, last: map[string]meterSample{}}
}

// Rate returns sale's recent attempts per second; 0 on the first reading or
// when the count cannot be read (the agent's report then shows no demand, which
// the rebalancer treats as idle: safe, since it only moves unsold quota).
func (m *DemandMeter) Rate(sale string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	count, err := m.count(ctx, sale)
	if err != nil {
		return 0
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	prev, ok := m.last[sale]
	s := meterSample{count: count, at: now}
	if ok && now.After(prev.at) && count >= prev.count {
		r := float64(count-prev.count) / now.Sub(prev.at).Seconds()
		s.rate = demandSmoothing*r + (1-demandSmoothing)*prev.rate
		if r == 0 && s.rate < minRate {
			s.rate = 0 // buyers are gone: say so, rather than a fading trickle
		}
	}
	m.last[sale] = s
	return s.rate
}
