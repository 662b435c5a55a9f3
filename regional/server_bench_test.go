package regional

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"flashsale/quota/layout"
)

// benchBuy runs buys of sale through h in parallel; any answer below 500
// passes, and 503 overloaded too when shed is set.
func benchBuy(b *testing.B, h http.Handler, sale string, tok string, shed bool) {
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			r := httptest.NewRequest("POST", "/v1/flash-sale/buy",
				strings.NewReader(fmt.Sprintf(`{"itemId":%q,"userId":"u%d","requestId":"r%d"}`, sale, i, i)))
			if tok != "" {
				r.Header.Set("Authorization", "Bearer "+tok)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code >= 500 && !(shed && w.Code == http.StatusServiceUnavailable) {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}

// BenchmarkFunnel compares answers from memory (not started, sold out)
// with answers that run the reserve script, in one run.
func BenchmarkFunnel(b *testing.B) {
	// The handler is called in-process (no sockets): the funnel's own cost.
	e := newEnv(b, func(c *Config) {
		c.InsecureDevIdentity, c.JWT = true, JWTConfig{}
		now := c.Now()
		c.Sales = append(c.Sales,
			layout.SaleSpec{ID: "later", Total: 1, StartsAt: now.Add(time.Hour)},
			layout.SaleSpec{ID: "big", Total: 1 << 40, StartsAt: now.Add(-time.Hour), ReservationTTL: time.Hour},
		)
		c.StaticGrants["big"] = 1 << 40
		c.StaticGrants[testSale] = 0
	})
	h := e.srv.Handler()
	// The sold-out flag is learned from the first answer.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/flash-sale/buy", strings.NewReader(`{"itemId":"phone","userId":"w","requestId":"w"}`)))
	if w.Code != http.StatusGone {
		b.Fatalf("warm-up answered %d: %s", w.Code, w.Body)
	}
	b.Run("not_started", func(b *testing.B) { benchBuy(b, h, "later", "", false) })
	b.Run("sold_out", func(b *testing.B) { benchBuy(b, h, testSale, "", false) })
	b.Run("reserve", func(b *testing.B) { benchBuy(b, h, "big", "", false) })
}

// BenchmarkShed is what a buy costs the seller when every Redis slot is
// taken and nobody may queue: the refusal of an overloaded seller, in
// process (no sockets), beside a sold-out answer from memory.
func BenchmarkShed(b *testing.B) {
	e := newEnv(b, func(c *Config) {
		c.InsecureDevIdentity, c.JWT = true, JWTConfig{}
		c.Admission = LimitConfig{Initial: 1, Min: 1, Max: 1, Target: time.Second, Backoff: 0.5}
		now := c.Now()
		c.Sales = append(c.Sales, layout.SaleSpec{ID: "big", Total: 1 << 40, StartsAt: now.Add(-time.Hour), ReservationTTL: time.Hour})
		c.StaticGrants["big"] = 1 << 40
	})
	if _, ok := e.srv.adm.redis.Acquire(); !ok {
		b.Fatal("could not take the one Redis slot")
	}
	h := e.srv.Handler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/flash-sale/buy", strings.NewReader(`{"itemId":"big","userId":"w","requestId":"w"}`)))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), CodeOverloaded) {
		b.Fatalf("a buy with the slot taken answered %d: %s", w.Code, w.Body)
	}
	b.Run("shed", func(b *testing.B) { benchBuy(b, h, "big", "", true) })
}
