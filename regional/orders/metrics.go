package orders

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rows    *prometheus.CounterVec // sale
	rejects *prometheus.CounterVec // sale
	lag     *prometheus.GaugeVec   // sale
	errs    *prometheus.CounterVec // kind: redis|sql
	batch   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_orders_rows_written_total",
			Help: "Order stream events written to the SQL order store.",
		}, []string{"sale"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_orders_rejects_total",
			Help: "Order stream entries recorded in order_rejects instead of orders (malformed).",
		}, []string{"sale"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashsale_orders_lag_entries",
			Help: "Order stream entries not yet acknowledged by the SQL consumer group (undelivered plus pending).",
		}, []string{"sale"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_orders_errors_total",
			Help: "Errors of the order consumer, by where they happened.",
		}, []string{"kind"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_orders_batch_write_seconds",
			Help:    "Time to write one batch of order events to SQL (one transaction).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	for _, c := range []prometheus.Collector{m.rows, m.rejects, m.lag, m.errs, m.batch} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("order consumer metrics: already registered (one consumer per registry): %w", err)
			}
			return nil, fmt.Errorf("order consumer metrics: %w", err)
		}
	}
	return m, nil
}
