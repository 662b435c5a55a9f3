package coordinator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type metrics struct {
	writes    *prometheus.CounterVec // committed etcd write transactions, by what they wrote
	rejected  *prometheus.CounterVec // fenced transactions whose compare failed, by reason
	leader    prometheus.Gauge
	learning  prometheus.Gauge
	ticks     prometheus.Counter
	tickErrs  prometheus.Counter
	granted   prometheus.Counter   // units granted by the leader (cumulative)
	sold      *prometheus.GaugeVec // units sold per sale, summed over the regions' reports
	requested prometheus.Counter   // units asked back in release requests
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "etcd_writes_total",
			Help: "etcd write transactions the coordinator committed, by kind (alloc, sale).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "etcd_writes_rejected_total",
			Help: "Fenced etcd transactions whose compare failed: deposed (leader fence) or conflict (alloc revision).",
		}, []string{"reason"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "leader",
			Help: "1 while this coordinator is the leader.",
		}),
		learning: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "learning",
			Help: "1 while a new leader is in learning mode and grants nothing.",
		}),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "rebalance_ticks_total",
			Help: "Rebalance loop iterations run as leader.",
		}),
		tickErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "rebalance_errors_total",
			Help: "Rebalance loop iterations that failed for a sale.",
		}),
		sold: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "reported_sold_units",
			Help: "Units sold per sale, summed over the live regions' latest reports (leader only); with etcd_writes_total it gives writes per 1,000 purchases.",
		}, []string{"sale"}),
		granted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "granted_units_total",
			Help: "Units granted to regions in committed writes.",
		}),
		requested: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "coordinator", Name: "release_requested_units_total",
			Help: "Units asked back from regions in committed release requests.",
		}),
	}
	// Export the series before the first event, so rates start at zero.
	for _, k := range []string{"alloc", "sale"} {
		m.writes.WithLabelValues(k)
	}
	for _, r := range []string{"deposed", "conflict"} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.writes, m.rejected, m.leader, m.learning, m.ticks, m.tickErrs, m.granted, m.requested, m.sold} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("register coordinator metrics: %w", err)
			}
		}
	}
	return m, nil
}

// EtcdWrites is the number of etcd write transactions this coordinator has
// committed (sales and allocations): with units sold, it gives etcd writes
// per 1,000 purchases without scraping the registry.
func (c *Coordinator) EtcdWrites() int64 {
	var n float64
	for _, k := range []string{"alloc", "sale"} {
		var m dto.Metric
		if err := c.m.writes.WithLabelValues(k).Write(&m); err == nil {
			n += m.GetCounter().GetValue()
		}
	}
	return int64(n)
}
