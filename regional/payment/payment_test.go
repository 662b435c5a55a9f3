package payment

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func req(id string) PaymentRequest {
	return PaymentRequest{ReservationID: "r-" + id, Sale: "s1", User: "u1", Amount: 1999, PaymentID: "pay-" + id}
}

func newDev(t *testing.T, cfg DevConfig) *Dev {
	t.Helper()
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestValidate(t *testing.T) {
	bad := []PaymentRequest{
		{},
		{ReservationID: "r", Sale: "s", User: "u", Amount: 1},
		{ReservationID: "r", Sale: "s", User: "u", PaymentID: "p"},
		{Sale: "s", User: "u", Amount: 1, PaymentID: "p"},
	}
	for _, r := range bad {
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", r, err)
		}
	}
	if err := req("1").Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDev(DevConfig{FailureRate: 2}); err == nil {
		t.Fatal("NewDev accepted FailureRate 2")
	}
}

// A payment that went through but whose confirm was not recorded is retried
// with the same payment id: the buyer is charged once.
func TestDevIsIdempotentByPaymentID(t *testing.T) {
	d := newDev(t, DevConfig{Seed: 1})
	ctx := context.Background()
	first, err := d.Pay(ctx, req("1"))
	if err != nil || first.Status != Paid || first.Replayed {
		t.Fatalf("first pay = %+v, %v", first, err)
	}
	again, err := d.Pay(ctx, req("1"))
	if err != nil || !again.Replayed || again.Status != Paid || !again.At.Equal(first.At) {
		t.Fatalf("retry = %+v, %v; want the first answer, replayed", again, err)
	}
	if amount, n := d.Charged(); amount != 1999 || n != 1 {
		t.Fatalf("charged %d in %d payments, want 1999 in 1", amount, n)
	}
	other := req("1")
	other.Amount = 5
	if _, err := d.Pay(ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("same id, other amount: %v, want ErrConflict", err)
	}
}

func TestDevConcurrentRetriesChargeOnce(t *testing.T) {
	d := newDev(t, DevConfig{Latency: time.Millisecond, Jitter: time.Millisecond, Seed: 3})
	var wg sync.WaitGroup
	var replayed atomic.Int64
	for range 20 {
		wg.Go(func() {
			res, err := d.Pay(context.Background(), req("x"))
			if err != nil {
				t.Error(err)
			}
			if res.Replayed {
				replayed.Add(1)
			}
		})
	}
	wg.Wait()
	if amount, n := d.Charged(); amount != 1999 || n != 1 || replayed.Load() != 19 {
		t.Fatalf("charged %d in %d payments with %d replays, want 1999 in 1 with 19", amount, n, replayed.Load())
	}
}

// Failures charge nothing; retrying each payment id until it succeeds
// charges every payment exactly once.
func TestDevFailuresChargeNothing(t *testing.T) {
	d := newDev(t, DevConfig{FailureRate: 0.5, Seed: 11})
	ctx := context.Background()
	failures := 0
	for i := range 50 {
		for {
			_, err := d.Pay(ctx, req(strconv.Itoa(i)))
			if err == nil {
				break
			}
			if !errors.Is(err, ErrProvider) {
				t.Fatal(err)
			}
			failures++
		}
	}
	if failures == 0 {
		t.Fatal("FailureRate 0.5 produced no failure")
	}
	if amount, n := d.Charged(); amount != 50*1999 || n != 50 {
		t.Fatalf("charged %d in %d payments, want %d in 50", amount, n, 50*1999)
	}
}

type counting struct {
	Provider
	calls atomic.Int64
}

func (c *counting) Pay(ctx context.Context, r PaymentRequest) (PaymentResult, error) {
	c.calls.Add(1)
	return c.Provider.Pay(ctx, r)
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.Gauge.GetValue()
}

func waitState(t *testing.T, b *Breaker, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker state %s, want %s", b.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The provider goes down: the breaker opens after Failures errors and then
// answers ErrUnavailable without calling it; after OpenTimeout it lets a
// trial through; a failed trial reopens it, a good one closes it.
func TestBreakerOpensHalfOpensAndRecovers(t *testing.T) {
	dev := newDev(t, DevConfig{Seed: 5})
	p := &counting{Provider: dev}
	cfg := DefaultBreakerConfig()
	cfg.Failures, cfg.OpenTimeout = 3, 50*time.Millisecond
	b, err := NewBreaker(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Pay(ctx, req("ok")); err != nil || b.State() != "closed" {
		t.Fatalf("healthy pay: %v, state %s", err, b.State())
	}

	dev.SetDown(true)
	for i := range 3 {
		if _, err := b.Pay(ctx, req("down"+strconv.Itoa(i))); !errors.Is(err, ErrProvider) {
			t.Fatalf("call %d while down: %v, want ErrProvider", i, err)
		}
	}
	if b.State() != "open" || gauge(t, b.state) != 2 {
		t.Fatalf("state %s (gauge %v) after 3 failures, want open (2)", b.State(), gauge(t, b.state))
	}
	before := p.calls.Load()
	if _, err := b.Pay(ctx, req("while-open")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pay while open: %v, want ErrUnavailable", err)
	}
	if p.calls.Load() != before {
		t.Fatal("the provider was called while the breaker was open")
	}
	if ra := b.RetryAfter(); ra < time.Second {
		t.Fatalf("RetryAfter %v while open, want >= 1s", ra)
	}

	// Still down at the first trial: back to open.
	waitState(t, b, "half-open")
	if _, err := b.Pay(ctx, req("trial1")); !errors.Is(err, ErrProvider) {
		t.Fatalf("trial while down: %v, want ErrProvider", err)
	}
	if b.State() != "open" {
		t.Fatalf("state %s after a failed trial, want open", b.State())
	}

	dev.SetDown(false)
	waitState(t, b, "half-open")
	if gauge(t, b.state) != 1 {
		t.Fatalf("gauge %v when half-open, want 1", gauge(t, b.state))
	}
	if res, err := b.Pay(ctx, req("trial2")); err != nil || res.Status != Paid {
		t.Fatalf("trial after recovery: %+v, %v", res, err)
	}
	if b.State() != "closed" || gauge(t, b.state) != 0 || b.RetryAfter() != 0 {
		t.Fatalf("state %s gauge %v RetryAfter %v after a good trial, want closed 0 0", b.State(), gauge(t, b.state), b.RetryAfter())
	}
	// The payment that failed while open is retried with its id and charged once.
	if _, err := b.Pay(ctx, req("while-open")); err != nil {
		t.Fatal(err)
	}
	if _, n := dev.Charged(); n != 3 { // ok, trial2, while-open
		t.Fatalf("%d payments charged, want 3", n)
	}
}

// Bad requests, conflicts, declines and cancelled calls say nothing about
// the provider's health: they never open the breaker.
func TestBreakerIgnoresCallerErrorsAndDeclines(t *testing.T) {
	dev := newDev(t, DevConfig{DeclineRate: 1, Latency: 10 * time.Millisecond, Seed: 9})
	cfg := DefaultBreakerConfig()
	cfg.Failures = 2
	b, err := NewBreaker(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if _, err := b.Pay(ctx, PaymentRequest{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("empty request: %v", err)
		}
		res, err := b.Pay(ctx, req("d"+strconv.Itoa(i)))
		if err != nil || res.Status != Declined {
			t.Fatalf("declined payment: %+v, %v", res, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Pay(cctx, req("c"+strconv.Itoa(i))); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
	}
	if b.State() != "closed" {
		t.Fatalf("state %s, want closed", b.State())
	}
	if amount, _ := dev.Charged(); amount != 0 {
		t.Fatalf("declines charged %d", amount)
	}
}

func TestExtensionIsBoundedByTwiceTheTTL(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ttl := 10 * time.Minute
	cases := []struct {
		name         string
		expires, now time.Time
		retry        time.Duration
		want         time.Time
		ok           bool
	}{
		{"extends to now+2*retry", t0.Add(ttl), t0.Add(9 * time.Minute), 2 * time.Minute, t0.Add(13 * time.Minute), true},
		{"capped at reservedAt+2ttl", t0.Add(ttl), t0.Add(19 * time.Minute), 5 * time.Minute, t0.Add(2 * ttl), true},
		{"already at the cap", t0.Add(2 * ttl), t0.Add(19 * time.Minute), 5 * time.Minute, t0.Add(2 * ttl), false},
		{"never shortens", t0.Add(ttl), t0.Add(time.Minute), time.Second, t0.Add(ttl), false},
	}
	for _, c := range cases {
		got, ok := Extension(t0, ttl, c.expires, c.now, c.retry)
		if !got.Equal(c.want) || ok != c.ok {
			t.Errorf("%s: got %v %v, want %v %v", c.name, got.Sub(t0), ok, c.want.Sub(t0), c.ok)
		}
	}
}

func TestDevDefaultsAreValid(t *testing.T) {
	d := newDev(t, DevDefaults(1))
	b, err := NewBreaker(d, DefaultBreakerConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBreaker(d, BreakerConfig{}); err == nil {
		t.Fatal("NewBreaker accepted an empty config")
	}
	res, err := b.Pay(context.Background(), req("1"))
	if err != nil && !errors.Is(err, ErrProvider) {
		t.Fatal(err)
	}
	if err == nil && res.Status != Paid && res.Status != Declined {
		t.Fatalf("status %q", res.Status)
	}
}
