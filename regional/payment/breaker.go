package payment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// BreakerConfig tunes the circuit breaker around a provider.
type BreakerConfig struct {
	Name string // label of the metrics and logs, e.g. the provider's name
	// Trip after this many consecutive provider failures.
	Failures uint32
	// Stay open this long, then let HalfOpenRequests trial calls through.
	OpenTimeout      time.Duration
	HalfOpenRequests uint32
	// Clear the failure counts this often while closed (0: never).
	Interval time.Duration

	Registerer prometheus.Registerer // nil: a private registry
	Logger     *slog.Logger          // nil: slog.Default()
}

// DefaultBreakerConfig trips after 5 consecutive failures and probes again
// after 10 s.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{Name: "payment", Failures: 5, OpenTimeout: 10 * time.Second, HalfOpenRequests: 1, Interval: time.Minute}
}

// Breaker wraps a Provider with a circuit breaker. While open, Pay answers
// ErrUnavailable without calling the provider. Bad requests, conflicts,
// declines and cancelled contexts say nothing about the provider's health
// and do not count.
type Breaker struct {
	p   Provider
	cb  *gobreaker.CircuitBreaker[PaymentResult]
	cfg BreakerConfig
	log *slog.Logger

	state   prometheus.Gauge
	latency *prometheus.HistogramVec // result

	mu       sync.Mutex
	openedAt time.Time
}

// NewBreaker wraps p.
func NewBreaker(p Provider, cfg BreakerConfig) (*Breaker, error) {
	if p == nil {
		return nil, errors.New("payment breaker: provider is required")
	}
	if cfg.Name == "" || cfg.Failures == 0 || cfg.OpenTimeout <= 0 || cfg.HalfOpenRequests == 0 || cfg.Interval < 0 {
		return nil, fmt.Errorf("payment breaker: need a Name (%q), Failures (%d) > 0, OpenTimeout (%v) > 0, HalfOpenRequests (%d) > 0, Interval (%v) >= 0",
			cfg.Name, cfg.Failures, cfg.OpenTimeout, cfg.HalfOpenRequests, cfg.Interval)
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Breaker{
		p: p, cfg: cfg, log: log.With("component", "payment", "provider", cfg.Name),
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "flashsale_payment_breaker_state",
			Help:        "Payment circuit breaker state: 0 closed, 1 half-open, 2 open.",
			ConstLabels: prometheus.Labels{"provider": cfg.Name},
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "flashsale_payment_seconds",
			Help:        "Payment call latency by result (paid, declined, error, unavailable, invalid).",
			ConstLabels: prometheus.Labels{"provider": cfg.Name},
			Buckets:     prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{b.state, b.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("payment breaker metrics: %w", err)
		}
	}
	b.cb = gobreaker.NewCircuitBreaker[PaymentResult](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: cfg.HalfOpenRequests,
		Interval:    cfg.Interval,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.Failures },
		IsExcluded: func(err error) bool {
			return errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) ||
				errors.Is(err, context.Canceled)
		},
		OnStateChange: b.onStateChange,
	})
	return b, nil
}

func (b *Breaker) onStateChange(_ string, from, to gobreaker.State) {
	b.state.Set(float64(to))
	if to == gobreaker.StateOpen {
		b.mu.Lock()
		b.openedAt = time.Now()
		b.mu.Unlock()
	}
	b.log.Warn("payment circuit breaker", "from", from.String(), "to", to.String())
}

// Pay calls the provider unless the breaker is open; then it answers an
// error wrapping ErrUnavailable at once.
func (b *Breaker) Pay(ctx context.Context, req PaymentRequest) (PaymentResult, error) {
	start := time.Now()
	res, err := b.cb.Execute(func() (PaymentResult, error) { return b.p.Pay(ctx, req) })
	result := string(res.Status)
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		err = fmt.Errorf("pay %s: %w (breaker %s)", req.PaymentID, ErrUnavailable, b.cb.State())
		result = "unavailable"
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrConflict):
		result = "invalid"
	case err != nil:
		result = "error"
	}
	b.latency.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return res, err
}

// State is the breaker's state: "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }

// RetryAfter is how long until the breaker lets a trial call through, at
// least one second (the unit of an HTTP Retry-After); zero when closed.
func (b *Breaker) RetryAfter() time.Duration {
	if b.cb.State() != gobreaker.StateOpen {
		return 0
	}
	b.mu.Lock()
	left := b.cfg.OpenTimeout - time.Since(b.openedAt)
	b.mu.Unlock()
	secs := (left + time.Second - 1) / time.Second // round up: never invite a retry too early
	return max(secs, 1) * time.Second
}
