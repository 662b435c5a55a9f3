package regional

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests      *prometheus.CounterVec   // route, outcome
	latency       *prometheus.HistogramVec // route
	remaining     *prometheus.GaugeVec     // sale
	expired       *prometheus.CounterVec   // sale
	storeErrors   *prometheus.CounterVec   // op
	holds         *prometheus.CounterVec   // result
	ready         prometheus.Gauge
	sellers       prometheus.Gauge   // live sellers of the region (gossip)
	gossipApplied prometheus.Counter // stock reads of other sellers applied
}

func newMetrics(reg prometheus.Registerer, region string) (*metrics, error) {
	labels := prometheus.Labels{"region": region}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "requests_total", ConstLabels: labels,
			Help: "Shopper requests by route and outcome (an error code such as sold_out, or reserved, duplicate, confirmed, cancelled, ok).",
		}, []string{"route", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "request_duration_seconds", ConstLabels: labels,
			Help: "Shopper request latency by route, from the handler's start to the answer written.",
			// Most answers come from memory (well under 1 ms); the budget is 200 ms.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .2, .5, 1},
		}, []string{"route"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "remaining_units", ConstLabels: labels,
			Help: "Units this region can still reserve per sale, at the last counter read.",
		}, []string{"sale"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "reservations_expired_total", ConstLabels: labels,
			Help: "Reservations this seller's sweeper expired (their units returned to stock).",
		}, []string{"sale"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "store_errors_total", ConstLabels: labels,
			Help: "Redis store calls that failed (timeouts included), by operation.",
		}, []string{"op"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "quota_holds_total", ConstLabels: labels,
			Help: "Buys held for quota (Config.QuotaWait) because this region was dry while the sale had stock, by result: quota (woken by new stock, tried again), timeout (answered quota_pending), gone (client left).",
		}, []string{"result"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "ready", ConstLabels: labels,
			Help: "1 while Redis is reachable, the scripts are loaded and durability holds (appendfsync always).",
		}),
		sellers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "region_sellers", ConstLabels: labels,
			Help: "Live sellers of the region as gossip membership sees them (1 without gossip); each enforces 1/n of the per-user and per-IP limits.",
		}),
		gossipApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "gossip_stock_applied_total", ConstLabels: labels,
			Help: "Stock reads published by other sellers of the region and applied here (newer than this seller's own last read).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.remaining, m.expired, m.storeErrors, m.holds, m.ready, m.sellers, m.gossipApplied} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register seller metrics for region %s: %w", region, err)
		}
	}
	return m, nil
}

// registerAdmission exports the Redis-wide admission limit and what it
// holds in flight.
func (m *metrics) registerAdmission(reg prometheus.Registerer, region string, a *admission) error {
	labels := prometheus.Labels{"region": region}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "admission_limit", ConstLabels: labels,
			Help: "The adaptive concurrency limit on this seller's Redis work (AIMD on latency).",
		}, func() float64 { return float64(a.redis.Limit()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "admission_in_flight", ConstLabels: labels,
			Help: "Requests admitted to Redis work and not yet answered (queued in the Batcher and held for quota included).",
		}, func() float64 { return float64(a.redis.InFlight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "admission_waiting", ConstLabels: labels,
			Help: "Requests waiting for an admission slot (at most the limit, each at most LimitConfig.Queue).",
		}, func() float64 { return float64(a.waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "admission_retry_hint_seconds", ConstLabels: labels,
			Help: "The retry hint a request shed now would be told: the tail of the virtual queue of shed requests.",
		}, func() float64 { return a.hint.current().Seconds() }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register admission metrics for region %s: %w", region, err)
		}
	}
	return nil
}
