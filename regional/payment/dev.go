package payment

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// DevConfig tunes the dev provider. Seeded, so a test run is repeatable.
type DevConfig struct {
	Latency     time.Duration // mean simulated latency
	Jitter      time.Duration // latency is uniform in Latency ± Jitter
	FailureRate float64       // share of calls failing with ErrProvider (nothing charged)
	DeclineRate float64       // share of new payments declined
	Seed        uint64
	Now         func() time.Time // nil: time.Now
}

// DevDefaults is a provider that behaves like a real one on a good day:
// 50 ± 30 ms, 1% failures, 2% declines.
func DevDefaults(seed uint64) DevConfig {
	return DevConfig{Latency: 50 * time.Millisecond, Jitter: 30 * time.Millisecond, FailureRate: 0.01, DeclineRate: 0.02, Seed: seed}
}

var (
	_ Provider = (*Dev)(nil)
	_ Provider = (*Breaker)(nil)
)

// Dev is an in-memory provider for dev mode and tests. It remembers every
// payment id it answered, so a retry is never charged twice.
type Dev struct {
	cfg DevConfig

	mu       sync.Mutex
	rng      *rand.Rand
	down     bool
	payments map[string]devPayment
	charged  int64 // sum of amounts charged
}

type devPayment struct {
	req PaymentRequest
	res PaymentResult
}

// NewDev returns a dev provider; rates must be within [0, 1].
func NewDev(cfg DevConfig) (*Dev, error) {
	if cfg.FailureRate < 0 || cfg.FailureRate > 1 || cfg.DeclineRate < 0 || cfg.DeclineRate > 1 {
		return nil, fmt.Errorf("dev payment provider: FailureRate %v and DeclineRate %v must be within [0, 1]", cfg.FailureRate, cfg.DeclineRate)
	}
	if cfg.Latency < 0 || cfg.Jitter < 0 || cfg.Jitter > cfg.Latency {
		return nil, fmt.Errorf("dev payment provider: need 0 <= Jitter (%v) <= Latency (%v)", cfg.Jitter, cfg.Latency)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Dev{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed+1)), payments: map[string]devPayment{}}, nil
}

// SetDown makes every call fail with ErrProvider (true) until set back.
func (d *Dev) SetDown(down bool) {
	d.mu.Lock()
	d.down = down
	d.mu.Unlock()
}

// Charged is the total amount charged and the number of paid payments.
func (d *Dev) Charged() (amount int64, payments int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.payments {
		if p.res.Status == Paid {
			payments++
		}
	}
	return d.charged, payments
}

// Pay simulates the call. A repeat of a payment id returns the first
// answer (Replayed) without charging; a failure charges nothing.
func (d *Dev) Pay(ctx context.Context, req PaymentRequest) (PaymentResult, error) {
	if err := req.Validate(); err != nil {
		return PaymentResult{}, err
	}
	d.mu.Lock()
	delay := d.cfg.Latency
	if d.cfg.Jitter > 0 {
		delay += time.Duration(d.rng.Int64N(int64(2*d.cfg.Jitter)+1)) - d.cfg.Jitter
	}
	fail := d.down || d.rng.Float64() < d.cfg.FailureRate
	decline := d.rng.Float64() < d.cfg.DeclineRate
	d.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return PaymentResult{}, fmt.Errorf("pay %s: %w", req.PaymentID, ctx.Err())
		case <-t.C:
		}
	}
	if fail {
		return PaymentResult{}, fmt.Errorf("pay %s: %w: simulated failure", req.PaymentID, ErrProvider)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.payments[req.PaymentID]; ok {
		if p.req != req {
			return PaymentResult{}, fmt.Errorf("pay %s: %w (first for reservation %s amount %d)", req.PaymentID, ErrConflict, p.req.ReservationID, p.req.Amount)
		}
		res := p.res
		res.Replayed = true
		return res, nil
	}
	res := PaymentResult{PaymentID: req.PaymentID, Status: Paid, At: d.cfg.Now()}
	if decline {
		res.Status = Declined
	} else {
		d.charged += req.Amount
	}
	d.payments[req.PaymentID] = devPayment{req: req, res: res}
	return res, nil
}
