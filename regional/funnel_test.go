package regional

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"flashsale/quota/layout"
)

// TestHTTPBadInput: every malformed or refused request gets its status and
// code, and leaves Redis exactly as it was (same counters, same keys).
func TestHTTPBadInput(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		now := c.Now()
		c.Sales = append(c.Sales,
			layout.SaleSpec{ID: "over", Total: 5, StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)},
			layout.SaleSpec{ID: "held", Total: 5, StartsAt: now.Add(-time.Hour), State: layout.SalePaused},
		)
	})
	// One real reservation, so confirm/cancel cases have something to refuse.
	resv := e.buy("alice", "a1").resv(t).ReservationID

	now := e.clock.Now()
	alice := token(t, testSecret, "alice", "eu", now.Add(time.Hour))
	bob := token(t, testSecret, "bob", "eu", now.Add(time.Hour))
	expired := token(t, testSecret, "bob", "eu", now.Add(-time.Hour))
	forged := token(t, []byte("another-secret-another-secret-0123"), "bob", "eu", now.Add(time.Hour))
	noHome := token(t, testSecret, "bob", "", now.Add(time.Hour))
	badSub := token(t, testSecret, "bob smith", "eu", now.Add(time.Hour))
	mars := token(t, testSecret, "bob", "mars", now.Add(time.Hour))
	unsigned, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "bob", "home_region": "eu", "exp": now.Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	long := strings.Repeat("x", 65)

	buy := "/v1/flash-sale/buy"
	confirm := "/v1/flash-sale/reservations/" + resv + "/confirm"
	cases := []struct {
		name         string
		method, path string
		auth         string
		ctype        string
		body         string
		status       int
		code         string
	}{
		{"body over 4 KiB", "POST", buy, bob, "", `{"itemId":"phone","requestId":"` + strings.Repeat("r", 5000) + `"}`, 413, CodeBodyTooLarge},
		{"not JSON", "POST", buy, bob, "", `itemId=phone`, 400, CodeBadJSON},
		{"empty body", "POST", buy, bob, "", ``, 400, CodeBadJSON},
		{"JSON array", "POST", buy, bob, "", `["phone"]`, 400, CodeBadJSON},
		{"unknown field", "POST", buy, bob, "", `{"itemId":"phone","requestId":"r","quantity":5}`, 400, CodeBadJSON},
		{"trailing data", "POST", buy, bob, "", `{"itemId":"phone","requestId":"r"}{"itemId":"phone"}`, 400, CodeBadJSON},
		{"wrong type", "POST", buy, bob, "", `{"itemId":7,"requestId":"r"}`, 400, CodeBadJSON},
		{"duplicate member", "POST", buy, bob, "", `{"itemId":"tablet","itemId":"phone","requestId":"r"}`, 400, CodeBadJSON},
		{"member name in another case", "POST", buy, bob, "", `{"ItemId":"phone","requestId":"r"}`, 400, CodeBadJSON},
		{"invalid UTF-8", "POST", buy, bob, "", "{\"itemId\":\"phone\",\"requestId\":\"r\xff\"}", 400, CodeBadJSON},
		{"whitespace only", "POST", buy, bob, "", " \n ", 400, CodeBadJSON},
		{"null", "POST", buy, bob, "", `null`, 400, CodeBadItemID},
		{"text/plain", "POST", buy, bob, "text/plain", `{"itemId":"phone","requestId":"r"}`, 415, CodeUnsupportedMedia},
		{"missing itemId", "POST", buy, bob, "", `{"requestId":"r"}`, 400, CodeBadItemID},
		{"itemId with a space", "POST", buy, bob, "", `{"itemId":"pho ne","requestId":"r"}`, 400, CodeBadItemID},
		{"itemId with a brace", "POST", buy, bob, "", `{"itemId":"{phone}","requestId":"r"}`, 400, CodeBadItemID},
		{"itemId too long", "POST", buy, bob, "", `{"itemId":"` + long + `","requestId":"r"}`, 400, CodeBadItemID},
		{"bad userId", "POST", buy, bob, "", `{"itemId":"phone","userId":"b\u00f6b","requestId":"r"}`, 400, CodeBadUserID},
		{"missing requestId", "POST", buy, bob, "", `{"itemId":"phone"}`, 400, CodeBadRequestID},
		{"requestId too long", "POST", buy, bob, "", `{"itemId":"phone","requestId":"` + long + `"}`, 400, CodeBadRequestID},
		{"no token", "POST", buy, "", "", `{"itemId":"phone","requestId":"r"}`, 401, CodeUnauthenticated},
		{"garbage token", "POST", buy, "not.a.jwt", "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"bad signature", "POST", buy, forged, "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"alg none", "POST", buy, unsigned, "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"expired token", "POST", buy, expired, "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"no home_region", "POST", buy, noHome, "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"sub not an id", "POST", buy, badSub, "", `{"itemId":"phone","requestId":"r"}`, 401, CodeInvalidToken},
		{"userId is not sub", "POST", buy, bob, "", `{"itemId":"phone","userId":"alice","requestId":"r"}`, 403, CodeUserMismatch},
		{"unknown home region", "POST", buy, mars, "", `{"itemId":"phone","requestId":"r"}`, 403, CodeUnknownHomeRegion},
		{"unknown sale", "POST", buy, bob, "", `{"itemId":"tablet","requestId":"r"}`, 404, CodeUnknownSale},
		{"ended sale", "POST", buy, bob, "", `{"itemId":"over","requestId":"r"}`, 410, CodeSaleEnded},
		{"paused sale", "POST", buy, bob, "", `{"itemId":"held","requestId":"r"}`, 503, CodePaused},
		{"GET on buy", "GET", buy, bob, "", ``, 405, "method_not_allowed"},
		{"status without itemId", "GET", "/v1/flash-sale/status", "", "", ``, 400, CodeBadItemID},
		{"status of unknown sale", "GET", "/v1/flash-sale/status?itemId=tablet", "", "", ``, 404, CodeUnknownSale},
		{"confirm: bad reservation id", "POST", "/v1/flash-sale/reservations/a%20b/confirm", alice, "", `{"itemId":"phone"}`, 400, CodeBadReservationID},
		{"confirm: no itemId", "POST", confirm, alice, "", ``, 400, CodeBadItemID},
		{"confirm: itemId body and query differ", "POST", confirm + "?itemId=other", alice, "", `{"itemId":"phone"}`, 400, CodeBadItemID},
		{"confirm: unknown field", "POST", confirm, alice, "", `{"itemId":"phone","force":true}`, 400, CodeBadJSON},
		{"confirm: no token", "POST", confirm, "", "", `{"itemId":"phone"}`, 401, CodeUnauthenticated},
		{"confirm: another user's", "POST", confirm, bob, "", `{"itemId":"phone"}`, 403, CodeNotYours},
		{"confirm: unknown reservation", "POST", "/v1/flash-sale/reservations/424242/confirm", alice, "", `{"itemId":"phone"}`, 404, CodeUnknownResv},
		{"confirm: unknown sale", "POST", confirm, alice, "", `{"itemId":"tablet"}`, 404, CodeUnknownSale},
		{"cancel: another user's", "POST", "/v1/flash-sale/reservations/" + resv + "/cancel", bob, "", `{"itemId":"phone"}`, 403, CodeNotYours},
	}
	before, keys := e.counters(), e.dbsize()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tc.auth)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			a := answer{status: resp.StatusCode, header: resp.Header, body: body}
			expect(t, a, tc.status, tc.code)
			if a.code() == "" || !strings.Contains(a.header.Get("Content-Type"), "application/json") {
				t.Fatalf("error answer is not JSON with a code: %s", a.body)
			}
			if after := e.counters(); after != before {
				t.Fatalf("counters changed: %+v -> %+v", before, after)
			}
			if n := e.dbsize(); n != keys {
				t.Fatalf("Redis key count changed: %d -> %d", keys, n)
			}
		})
	}
}

// TestWrongRegionRedirect: a user whose home is another region is sent
// there with a 307 (method and body kept) and nothing touches Redis.
func TestWrongRegionRedirect(t *testing.T) {
	e := newEnv(t, nil)
	before, keys := e.counters(), e.dbsize()
	tok := token(t, testSecret, "bob", "us", e.clock.Now().Add(time.Hour))
	a := e.do("POST", "/v1/flash-sale/buy?src=app", tok, `{"itemId":"phone","requestId":"r"}`)
	expect(t, a, http.StatusTemporaryRedirect, CodeWrongRegion)
	if loc := a.header.Get("Location"); loc != "https://us.shop.example/v1/flash-sale/buy?src=app" {
		t.Fatalf("Location %q", loc)
	}
	a = e.do("POST", "/v1/flash-sale/reservations/7/cancel", tok, `{"itemId":"phone"}`)
	expect(t, a, http.StatusTemporaryRedirect, CodeWrongRegion)
	if loc := a.header.Get("Location"); loc != "https://us.shop.example/v1/flash-sale/reservations/7/cancel" {
		t.Fatalf("Location %q", loc)
	}
	if e.counters() != before || e.dbsize() != keys {
		t.Fatal("a redirected request changed Redis")
	}
}

// TestChunkedBodyLimit: a body without Content-Length is cut at the limit
// while it is read, not after.
func TestChunkedBodyLimit(t *testing.T) {
	e := newEnv(t, nil)
	big := `{"itemId":"phone","requestId":"` + strings.Repeat("r", 8000) + `"}`
	req, err := http.NewRequest("POST", e.url+"/v1/flash-sale/buy", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token(t, testSecret, "bob", "eu", e.clock.Now().Add(time.Hour)))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if req.ContentLength != 0 && req.ContentLength != -1 {
		t.Fatalf("request was not chunked (Content-Length %d)", req.ContentLength)
	}
	expect(t, answer{status: resp.StatusCode, body: body}, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
}

// TestMemoryAnswersPeekToken: answers from memory (not started, ended,
// unknown, all reserved) only peek at the token, so a token with a bad
// signature still gets them and another region's buyer is still sent
// home; an open sale checks the signature before Redis, and a missing or
// unreadable token is refused everywhere.
func TestMemoryAnswersPeekToken(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		now := c.Now()
		c.Sales = append(c.Sales,
			layout.SaleSpec{ID: "later", Total: 5, StartsAt: now.Add(time.Minute)},
			layout.SaleSpec{ID: "over", Total: 5, StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)},
			layout.SaleSpec{ID: "one", Total: 1, PerUserLimit: 1, ReservationTTL: time.Minute, StartsAt: now.Add(-time.Hour)},
		)
		c.StaticGrants["one"] = 1
	})
	post := func(auth, item string) answer {
		return e.do("POST", "/v1/flash-sale/buy", auth, `{"itemId":"`+item+`","requestId":"r9"}`)
	}
	exp := e.clock.Now().Add(time.Hour)
	expect(t, post(token(t, testSecret, "alice", "eu", exp), "one"), http.StatusCreated, "")
	expect(t, e.do("POST", "/v1/flash-sale/buy", token(t, testSecret, "carol", "eu", exp), `{"itemId":"one","requestId":"c1"}`),
		http.StatusServiceUnavailable, CodeAllReserved) // learned from Redis: alice holds the one unit
	before, keys := e.counters(), e.dbsize()

	other := []byte("another-secret-another-secret-0123")
	forged := token(t, other, "bob", "eu", exp)
	expect(t, post(forged, "later"), http.StatusTooEarly, CodeNotStarted)
	expect(t, post(forged, "over"), http.StatusGone, CodeSaleEnded)
	expect(t, post(forged, "nosuch"), http.StatusNotFound, CodeUnknownSale)
	expect(t, post(forged, "one"), http.StatusServiceUnavailable, CodeAllReserved)
	a := post(token(t, other, "bob", "us", exp), "one")
	expect(t, a, http.StatusTemporaryRedirect, CodeWrongRegion)
	if loc := a.header.Get("Location"); loc != "https://us.shop.example/v1/flash-sale/buy" {
		t.Fatalf("Location %q", loc)
	}
	// The open sale checks the signature.
	expect(t, post(forged, testSale), http.StatusUnauthorized, CodeInvalidToken)
	// What cannot be read is refused whatever the sale.
	for _, item := range []string{"later", "one", testSale} {
		expect(t, post("", item), http.StatusUnauthorized, CodeUnauthenticated)
		expect(t, post("not-a-jwt", item), http.StatusUnauthorized, CodeInvalidToken)
		expect(t, post("e30.!!!.sig", item), http.StatusUnauthorized, CodeInvalidToken)
		expect(t, post("e30.bm90IGpzb24.sig", item), http.StatusUnauthorized, CodeInvalidToken) // payload "not json"
		expect(t, post(token(t, other, "bob", "", exp), item), http.StatusUnauthorized, CodeInvalidToken)
	}
	if e.counters() != before || e.dbsize() != keys {
		t.Fatal("an answer from memory or a refused token changed Redis")
	}
}
