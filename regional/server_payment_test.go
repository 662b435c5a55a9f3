package regional

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/internal/pgtest"
	"flashsale/quota"
	"flashsale/regional/orders"
	"flashsale/regional/orders/orderstest"
	"flashsale/regional/payment"
	"flashsale/regional/redisstore"
)

// payEnv is a seller of region eu with a real dev payment provider behind
// a real breaker, registered in the seller's registry.
type payEnv struct {
	*testEnv
	dev     *payment.Dev
	breaker *payment.Breaker
}

func newPayEnv(t *testing.T, dc payment.DevConfig, bc payment.BreakerConfig, store orders.Store) *payEnv {
	t.Helper()
	pe := &payEnv{}
	var err error
	if pe.dev, err = payment.NewDev(dc); err != nil {
		t.Fatal(err)
	}
	pe.testEnv = newEnvDeps(t, nil, func(d *Deps) {
		bc.Registerer = d.Registry
		if pe.breaker, err = payment.NewBreaker(pe.dev, bc); err != nil {
			t.Fatal(err)
		}
		d.Payment, d.Orders = pe.breaker, store
	})
	return pe
}

func (e *payEnv) reservation(id string) quota.Reservation {
	e.t.Helper()
	r, err := e.srv.Store().Reservation(context.Background(), testSale, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func quietDev() payment.DevConfig { return payment.DevConfig{Seed: 1} } // no latency, failures or declines

// sqlState is the reservation's order row state ("" while there is none).
func sqlState(t *testing.T, s orders.Store, id string) orders.State {
	t.Helper()
	rows, err := s.Orders(context.Background(), testSale, "eu")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rows {
		if o.Resv == id {
			return o.State
		}
	}
	return ""
}

// TestConfirmPaysThenRecords: with the provider up, confirm charges once,
// answers 200, and the consumer the seller runs writes the confirmed row to
// SQL. A retried confirm after a payment whose confirm was lost reuses the
// payment id: no second charge.
func TestConfirmPaysThenRecords(t *testing.T) {
	store := orderstest.SQLite(t)
	e := newPayEnv(t, quietDev(), payment.DefaultBreakerConfig(), store)

	id := e.buy("alice", "r1").resv(t).ReservationID
	if got := e.finish("confirm", "alice", id); got.status != 200 || got.resv(t).State != "confirmed" {
		t.Fatalf("confirm: %d %s", got.status, got.body)
	}
	if amount, n := e.dev.Charged(); amount != 100 || n != 1 {
		t.Fatalf("charged %d in %d payments, want 100 in 1", amount, n)
	}
	waitFor(t, func() bool { return sqlState(t, store, id) == orders.Confirmed })
	rows, err := store.Orders(context.Background(), testSale, "eu")
	if err != nil || len(rows) != 1 || rows[0].PaymentID != PaymentID("eu", testSale, id) {
		t.Fatalf("order rows %+v (%v): want the payment id %s on the confirmed row", rows, err, PaymentID("eu", testSale, id))
	}
	// A repeat of a recorded confirm does not pay again.
	expect(t, e.finish("confirm", "alice", id), 200, "")

	// Bob's first attempt paid, then its confirm was lost (crash): the
	// provider already holds the payment under the derived id.
	id2 := e.buy("bob", "r2").resv(t).ReservationID
	first, err := e.breaker.Pay(context.Background(), payment.PaymentRequest{
		ReservationID: id2, Sale: testSale, User: "bob", Amount: 100, PaymentID: PaymentID("eu", testSale, id2)})
	if err != nil || first.Status != payment.Paid {
		t.Fatalf("first pay: %+v %v", first, err)
	}
	expect(t, e.finish("confirm", "bob", id2), 200, "")
	if amount, n := e.dev.Charged(); amount != 200 || n != 2 {
		t.Fatalf("after the retried confirm: charged %d in %d payments, want 200 in 2", amount, n)
	}
	if c := e.counters(); c.Sold != 2 || c.Reserved != 0 {
		t.Fatalf("counters %+v, want sold 2", c)
	}
	waitFor(t, func() bool { return sqlState(t, store, id2) == orders.Confirmed })
	if metric(t, e.reg, "flashsale_payment_seconds", map[string]string{"result": "paid"}) < 2 {
		t.Fatal("payment latency metric is not in the seller's registry")
	}
	if metric(t, e.reg, "flashsale_orders_rows_written_total", map[string]string{"sale": testSale}) < 4 {
		t.Fatal("order consumer metrics are not in the seller's registry")
	}
}

// TestConfirmRecordsToPostgres: the same path into PostgreSQL.
func TestConfirmRecordsToPostgres(t *testing.T) {
	store, err := orders.Open(context.Background(), pgtest.Start(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e := newPayEnv(t, quietDev(), payment.DefaultBreakerConfig(), store)
	id := e.buy("alice", "r1").resv(t).ReservationID
	expect(t, e.finish("confirm", "alice", id), 200, "")
	id2 := e.buy("bob", "r2").resv(t).ReservationID
	expect(t, e.finish("cancel", "bob", id2), 200, "")
	waitFor(t, func() bool {
		return sqlState(t, store, id) == orders.Confirmed && sqlState(t, store, id2) == orders.Cancelled
	})
}

// TestConfirmPaymentDown: the provider fails; the breaker opens; confirm
// answers 503 payment_unavailable with Retry-After and the reservation is
// extended, never past twice its TTL after it was made. When the provider
// is back, the breaker half-opens and the confirm succeeds.
func TestConfirmPaymentDown(t *testing.T) {
	bc := payment.DefaultBreakerConfig()
	bc.Failures, bc.OpenTimeout = 2, 2*time.Second
	e := newPayEnv(t, quietDev(), bc, nil)
	e.dev.SetDown(true)

	made := e.clock.Now()
	r := e.buy("alice", "r1").resv(t)
	ttl := time.Minute // testConfig's sale
	expires0 := r.ExpiresAt
	for range 2 {
		got := e.finish("confirm", "alice", r.ReservationID)
		expect(t, got, 503, CodePaymentUnavailable)
		if got.header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	// Far from expiry: nothing to extend yet.
	if got := e.reservation(r.ReservationID).ExpiresAt; got != expires0.UnixMilli() {
		t.Fatalf("extended at once: %d, want %d", got, expires0.UnixMilli())
	}
	if e.breaker.State() != "open" {
		t.Fatalf("breaker %s after 2 failures, want open", e.breaker.State())
	}
	if metric(t, e.reg, "flashsale_payment_breaker_state", nil) != 2 {
		t.Fatal("breaker state metric is not 2 (open) in the seller's registry")
	}

	// Near expiry, each unavailable confirm pushes the expiry later, up to
	// made + 2 TTL and no further.
	limit := made.Add(2 * ttl).UnixMilli()
	prev := expires0.UnixMilli()
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatal("the extensions never reached the cap")
		}
		e.clock.ns.Store(time.UnixMilli(prev).Add(-100 * time.Millisecond).UnixNano())
		got := e.finish("confirm", "alice", r.ReservationID)
		expect(t, got, 503, CodePaymentUnavailable)
		if s, err := strconv.Atoi(got.header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q", got.header.Get("Retry-After"))
		}
		now := e.reservation(r.ReservationID).ExpiresAt
		if now > limit {
			t.Fatalf("extended to %d, past the cap %d", now, limit)
		}
		if now == prev {
			break
		}
		if now < prev {
			t.Fatalf("expiry moved back: %d -> %d", prev, now)
		}
		prev = now
	}
	if prev != limit {
		t.Fatalf("extensions stopped at %d, want the cap %d", prev, limit)
	}
	if n := metric(t, e.reg, "flashsale_seller_reservation_extensions_total", map[string]string{"sale": testSale}); n < 1 {
		t.Fatalf("extensions metric %v", n)
	}
	if st := e.reservation(r.ReservationID).State; st != quota.Active {
		t.Fatalf("reservation %v while payment is down, want active", st)
	}

	// The provider recovers: after OpenTimeout the breaker lets a trial
	// call through and the confirm goes through.
	e.dev.SetDown(false)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := e.finish("confirm", "alice", r.ReservationID)
		if got.status == 200 {
			break
		}
		expect(t, got, 503, CodePaymentUnavailable)
		if time.Now().After(deadline) {
			t.Fatal("confirm never succeeded after the provider came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.breaker.State() != "closed" {
		t.Fatalf("breaker %s after a successful trial, want closed", e.breaker.State())
	}
	if _, n := e.dev.Charged(); n != 1 {
		t.Fatalf("%d payments, want 1", n)
	}
	if c := e.counters(); c.Sold != 1 || c.Reserved != 0 {
		t.Fatalf("counters %+v, want sold 1", c)
	}
}

// TestConfirmDeclined: a declined payment answers 402 and leaves the
// reservation active (the buyer may cancel it); nothing is sold.
func TestConfirmDeclined(t *testing.T) {
	dc := quietDev()
	dc.DeclineRate = 1
	e := newPayEnv(t, dc, payment.DefaultBreakerConfig(), nil)
	id := e.buy("alice", "r1").resv(t).ReservationID
	expect(t, e.finish("confirm", "alice", id), 402, CodePaymentDeclined)
	if st := e.reservation(id).State; st != quota.Active {
		t.Fatalf("reservation %v after a decline, want active", st)
	}
	if c := e.counters(); c.Sold != 0 || c.Reserved != 1 {
		t.Fatalf("counters %+v, want 1 reserved, 0 sold", c)
	}
	if e.breaker.State() != "closed" {
		t.Fatal("a decline tripped the breaker")
	}
	expect(t, e.finish("cancel", "alice", id), 200, "")
}

func TestConfigRejectsBadPayment(t *testing.T) {
	cfg := testConfig(newFakeClock())
	cfg.PaymentAmount = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("PaymentAmount 0 accepted")
	}
	cfg = testConfig(newFakeClock())
	cfg.PaymentTimeout = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("PaymentTimeout 0 accepted")
	}
}

// TestConfirmPaymentRejected: a payment id the provider already holds for
// a different request (here: another amount) is a 409 payment_rejected,
// not a second charge, and it does not trip the breaker.
func TestConfirmPaymentRejected(t *testing.T) {
	e := newPayEnv(t, quietDev(), payment.DefaultBreakerConfig(), nil)
	id := e.buy("alice", "r1").resv(t).ReservationID
	if _, err := e.dev.Pay(context.Background(), payment.PaymentRequest{
		ReservationID: id, Sale: testSale, User: "alice", Amount: 999, PaymentID: PaymentID("eu", testSale, id)}); err != nil {
		t.Fatal(err)
	}
	expect(t, e.finish("confirm", "alice", id), 409, CodePaymentRejected)
	if amount, n := e.dev.Charged(); amount != 999 || n != 1 {
		t.Fatalf("charged %d in %d payments, want only the first 999", amount, n)
	}
	if st := e.reservation(id).State; st != quota.Active {
		t.Fatalf("reservation %v, want active", st)
	}
	if e.breaker.State() != "closed" {
		t.Fatal("a rejected request tripped the breaker")
	}
}

// cancelDuringPay is the real dev provider, except that the buyer cancels
// the reservation (through the real store) while the payment runs.
type cancelDuringPay struct {
	*payment.Dev
	store *redisstore.Store
	now   func() time.Time
}

func (p cancelDuringPay) Pay(ctx context.Context, req payment.PaymentRequest) (payment.PaymentResult, error) {
	if err := p.store.Cancel(ctx, req.Sale, req.ReservationID, p.now()); err != nil {
		return payment.PaymentResult{}, err
	}
	return p.Dev.Pay(ctx, req)
}

// TestConfirmPaidButEnded: a reservation that ends while it is being paid
// answers 409 not_active naming the payment to refund, and is counted.
func TestConfirmPaidButEnded(t *testing.T) {
	dev, err := payment.NewDev(quietDev())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvDeps(t, nil, func(d *Deps) {
		d.Payment = cancelDuringPay{Dev: dev, store: redisstore.NewStore(d.Redis, "eu"), now: time.Now}
	})
	id := e.buy("alice", "r1").resv(t).ReservationID
	got := e.finish("confirm", "alice", id)
	expect(t, got, 409, CodeNotActive)
	if !strings.Contains(string(got.body), PaymentID("eu", testSale, id)) {
		t.Fatalf("answer does not name the payment to refund: %s", got.body)
	}
	if n := metric(t, e.reg, "flashsale_seller_payment_orphans_total", map[string]string{"sale": testSale}); n != 1 {
		t.Fatalf("orphans metric %v, want 1", n)
	}
	if c := e.counters(); c.Sold != 0 {
		t.Fatalf("sold %d, want 0", c.Sold)
	}
}
