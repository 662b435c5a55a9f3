package regional

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// retryHint decodes an error body's retryAfterMs.
func (a answer) retryHint(t testing.TB) int64 {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(a.body, &eb); err != nil {
		t.Fatalf("not an error body: %s", a.body)
	}
	return eb.RetryAfterMs
}

func (e *testEnv) attempts() int64 {
	e.t.Helper()
	e.srv.flushDemand(context.Background())
	n, _ := e.rdb.Get(context.Background(), layout.SaleKey(testSale, "attempts")).Int64()
	return n
}

// TestDryRegionAnswers: a region whose 2 units are taken answers from its
// counters and the agent's view of the other regions. Only a sale with
// every unit paid for, everywhere, is 410 sold_out; units held by unpaid
// reservations are 503 all_reserved; stock left elsewhere (or nothing
// known yet) is 503 quota_pending. The first answer comes from the script
// (re-checked against the view), the second from memory with no Redis
// write. The negative control is in the table: the same region state with
// the view and without it ("stock elsewhere" and "config file, held")
// gets different answers, so a seller that ignored the view would fail
// the first.
func TestDryRegionAnswers(t *testing.T) {
	type view struct{ total, othersSold, othersReserved int64 }
	for _, tc := range []struct {
		name      string
		view      *view // nil: no view written
		agent     bool  // an agent (fence 1) runs the region
		confirm   bool  // the 2 local units are paid for
		status    int
		code      string
		remaining int64
	}{
		{"stock elsewhere", &view{100, 10, 5}, true, false, 503, CodeQuotaPending, 83},
		{"one unit left elsewhere", &view{101, 98, 0}, true, true, 503, CodeQuotaPending, 1},
		{"all held", &view{100, 50, 48}, true, false, 503, CodeAllReserved, 0},
		{"sold elsewhere, held here", &view{100, 98, 0}, true, false, 503, CodeAllReserved, 0},
		{"all sold", &view{100, 98, 0}, true, true, 410, CodeSoldOut, 0},
		{"agent, no view yet", nil, true, true, 503, CodeQuotaPending, -1},
		{"config file, held", nil, false, false, 503, CodeAllReserved, 0},
		{"config file, all sold", nil, false, true, 410, CodeSoldOut, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				c.StaticGrants[testSale] = 2
				c.RefreshInterval = time.Hour // the test refreshes by hand
				c.QuotaWait = 0
			})
			ctx := context.Background()
			if tc.agent {
				if _, err := e.srv.Store().ApplyGrant(ctx, testSale, 1, 2); err != nil {
					t.Fatal(err)
				}
			}
			if tc.view != nil {
				v := redisstore.SaleView{Total: tc.view.total, OthersSold: tc.view.othersSold, OthersReserved: tc.view.othersReserved, At: e.clock.Now().UnixMilli()}
				if err := e.srv.Store().SetSaleView(ctx, testSale, 1, v); err != nil {
					t.Fatal(err)
				}
			}
			e.srv.refreshAll(ctx)
			for _, u := range []string{"alice", "bob"} {
				r := e.buy(u, u+"-1")
				expect(t, r, http.StatusCreated, "")
				if tc.confirm {
					expect(t, e.finish("confirm", u, r.resv(t).ReservationID), http.StatusOK, "")
					// Sold and held are told apart by the counters: the
					// refresh reads them (here by hand).
					e.srv.refreshAll(ctx)
				}
			}
			// From the script: it says "none here"; the view says why.
			check := func(a answer) {
				t.Helper()
				expect(t, a, tc.status, tc.code)
				switch tc.code {
				case CodeQuotaPending:
					if ra, ms := a.header.Get("Retry-After"), a.retryHint(t); ra != "1" || ms < 125 || ms >= 375 {
						t.Fatalf("Retry-After %q, retryAfterMs %d: want 1 and [125, 375)", ra, ms)
					}
					if !strings.Contains(string(a.body), "same requestId") {
						t.Fatalf("message does not say to retry with the same requestId: %s", a.body)
					}
				case CodeAllReserved:
					if ra, ms := a.header.Get("Retry-After"), a.retryHint(t); ra != "10" || ms < 5000 || ms >= 15000 {
						t.Fatalf("Retry-After %q, retryAfterMs %d: want 10 and [5000, 15000)", ra, ms)
					}
				case CodeSoldOut:
					if ra, ms := a.header.Get("Retry-After"), a.retryHint(t); ra != "" || ms != 0 {
						t.Fatalf("sold_out carries a retry hint (%q, %d): it is final", ra, ms)
					}
				}
			}
			check(e.buy("carol", "carol-1"))
			demand := e.attempts()
			before, keys := e.counters(), e.dbsize()
			// From memory: Redis unchanged, the same answer.
			check(e.buy("dave", "dave-1"))
			if e.counters() != before {
				t.Fatalf("counters %+v -> %+v: a dry answer changed Redis", before, e.counters())
			}
			// Buyers told to wait are demand; buyers told it is over are not.
			wantDemand := demand + 1
			if tc.code == CodeSoldOut {
				wantDemand = demand
			}
			if got := e.attempts(); got != wantDemand {
				t.Fatalf("attempts %d after a %s answer, want %d", got, tc.code, wantDemand)
			}
			if e.dbsize() != keys {
				t.Fatal("a dry answer added keys to Redis")
			}
			s := e.status()
			if s.State != tc.code || s.Remaining != tc.remaining || s.RegionRemaining != 0 {
				t.Fatalf("status %+v: want state %s, remaining %d, regionRemaining 0", s, tc.code, tc.remaining)
			}
		})
	}
}

// TestStatusOpen: an open region reports its own stock and the sale's.
func TestStatusOpen(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RefreshInterval = time.Hour })
	ctx := context.Background()
	if s := e.status(); s.State != "open" || s.Remaining != 100 || s.RegionRemaining != 100 {
		t.Fatalf("config-file status %+v: want open, 100 and 100", s)
	}
	v := redisstore.SaleView{Total: 1000, OthersSold: 300, OthersReserved: 50, At: e.clock.Now().UnixMilli()}
	if err := e.srv.Store().SetSaleView(ctx, testSale, 1, v); err != nil {
		t.Fatal(err)
	}
	expect(t, e.buy("alice", "a1"), http.StatusCreated, "")
	e.srv.refreshAll(ctx)
	if s := e.status(); s.State != "open" || s.Remaining != 1000-351 || s.RegionRemaining != 99 {
		t.Fatalf("status %+v: want open, remaining 649, regionRemaining 99", s)
	}
}

// TestQuotaHold: a buy that finds its region dry while the sale has stock
// is held up to QuotaWait; a grant applied meanwhile (published by
// apply_grant.lua, with no refresh tick to help: RefreshInterval is an
// hour) wakes it and the script is tried again. Without a grant it is
// answered quota_pending when the wait ends; with QuotaWait 0 at once,
// unheld (the negative control: the first case fails without the hold).
func TestQuotaHold(t *testing.T) {
	run := func(t *testing.T, wait time.Duration, grant bool) (answer, time.Duration, *testEnv) {
		e := newEnv(t, func(c *Config) {
			c.StaticGrants[testSale] = 1
			c.RefreshInterval = time.Hour
			c.QuotaWait = wait
		})
		ctx := context.Background()
		if _, err := e.srv.Store().ApplyGrant(ctx, testSale, 1, 1); err != nil {
			t.Fatal(err)
		}
		v := redisstore.SaleView{Total: 100, At: e.clock.Now().UnixMilli()}
		if err := e.srv.Store().SetSaleView(ctx, testSale, 1, v); err != nil {
			t.Fatal(err)
		}
		e.srv.refreshAll(ctx)
		expect(t, e.buy("alice", "a1"), http.StatusCreated, "")
		sale := e.srv.Sales().Get(testSale)
		done := make(chan struct{})
		var a answer
		start := time.Now()
		go func() {
			defer close(done)
			a, _ = e.try(ctx, "POST", "/v1/flash-sale/buy", token(t, testSecret, "bob", "eu", e.clock.Now().Add(time.Hour)),
				map[string]string{"itemId": testSale, "requestId": "b1"})
		}()
		if grant {
			// Bob's script answer marks the region dry; the grant follows.
			for !sale.dry.Load() {
				select {
				case <-done:
					t.Fatalf("bob answered before the region was dry: %d %s", a.status, a.body)
				case <-time.After(time.Millisecond):
				}
			}
			if _, err := e.srv.Store().ApplyGrant(ctx, testSale, 1, 2); err != nil {
				t.Fatal(err)
			}
		}
		<-done
		return a, time.Since(start), e
	}
	holds := func(e *testEnv, result string) float64 {
		return metric(t, e.reg, "flashsale_seller_quota_holds_total", map[string]string{"result": result})
	}
	t.Run("woken by a grant", func(t *testing.T) {
		a, _, e := run(t, maxQuotaWait, true)
		expect(t, a, http.StatusCreated, "")
		if holds(e, "quota") != 1 {
			t.Fatal("the hold was not counted as woken")
		}
		if c := e.counters(); c.Reserved != 2 {
			t.Fatalf("counters %+v: want alice's and bob's reservations", c)
		}
	})
	t.Run("times out", func(t *testing.T) {
		a, took, e := run(t, 50*time.Millisecond, false)
		expect(t, a, http.StatusServiceUnavailable, CodeQuotaPending)
		if took < 50*time.Millisecond || holds(e, "timeout") != 1 {
			t.Fatalf("answered after %v, timeout holds %v: want a 50 ms hold counted", took, holds(e, "timeout"))
		}
	})
	t.Run("no hold", func(t *testing.T) {
		a, _, e := run(t, 0, false)
		expect(t, a, http.StatusServiceUnavailable, CodeQuotaPending)
		if holds(e, "quota")+holds(e, "timeout") != 0 {
			t.Fatal("held with QuotaWait 0")
		}
	})
}

// TestQuotaHoldCountsInFlight: a buy held for quota holds its admission
// slot (issue 14: held buys are work in flight), so a burst on a dry
// region is bounded by the limit: with a limit of 2 and two buys held, a
// third is shed at once (503 overloaded) rather than held too.
func TestQuotaHoldCountsInFlight(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.StaticGrants[testSale] = 1
		c.RefreshInterval = time.Hour
		c.QuotaWait = maxQuotaWait
		c.Admission = LimitConfig{Initial: 2, Min: 2, Max: 2, Target: time.Hour, Backoff: 0.5}
	})
	// Held until their clients leave, so that the test does not race the
	// clock (Validate caps QuotaWait; the handler reads the field).
	e.srv.cfg.QuotaWait = time.Hour
	ctx := context.Background()
	if err := e.srv.Store().SetSaleView(ctx, testSale, 1, redisstore.SaleView{Total: 100, At: e.clock.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	expect(t, e.buy("alice", "a1"), http.StatusCreated, "")
	e.srv.refreshAll(ctx)
	sale := e.srv.Sales().Get(testSale)
	if p := sale.Phase(e.clock.Now()); p != PhaseQuotaPending {
		t.Fatalf("phase %v after the region's only unit was reserved: want quota pending", p)
	}
	hctx, leave := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, u := range []string{"bob", "carol"} {
		wg.Go(func() {
			_, _ = e.try(hctx, "POST", "/v1/flash-sale/buy", token(t, testSecret, u, "eu", e.clock.Now().Add(time.Hour)),
				map[string]string{"itemId": testSale, "requestId": u + "1"})
		})
	}
	waitFor(t, func() bool { return e.srv.adm.redis.InFlight() == 2 })
	// Bounded, so that a third buy held as well fails rather than hangs.
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := e.try(dctx, "POST", "/v1/flash-sale/buy", token(t, testSecret, "dave", "eu", e.clock.Now().Add(time.Hour)),
		map[string]string{"itemId": testSale, "requestId": "d1"})
	if err != nil {
		t.Fatalf("dave was held beyond the limit of 2: %v", err)
	}
	expect(t, a, http.StatusServiceUnavailable, CodeOverloaded)
	leave()
	wg.Wait()
	waitFor(t, func() bool { return e.srv.adm.redis.InFlight() == 0 })
}
