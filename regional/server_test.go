package regional

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/internal/testwait"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// fakeClock is the server's clock in tests: it moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().Truncate(time.Millisecond).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type testEnv struct {
	t      testing.TB
	redis  *redistest.Server
	rdb    *redis.Client
	srv    *Server
	reg    *prometheus.Registry
	url    string
	clock  *fakeClock
	client *http.Client
}

const testSale = "phone"

// testConfig is a seller of region eu that knows region us, with one open
// sale of 100 units granted statically, no rate limits and a fake clock.
func testConfig(clock *fakeClock) Config {
	cfg := DevConfig()
	cfg.Region = "eu"
	cfg.Regions = map[string]string{"us": "https://us.shop.example"}
	cfg.JWT.HS256Secret = testSecret
	cfg.UserRate = 0
	cfg.Now = clock.Now
	// The loops must not race the tests' own calls to Sweep and refreshAll.
	cfg.SweepInterval = time.Hour
	cfg.Sales = []layout.SaleSpec{{
		ID: testSale, Total: 100, PerUserLimit: 1, ReservationTTL: time.Minute,
		StartsAt: clock.Now().Add(-time.Hour), EndsAt: clock.Now().Add(time.Hour),
	}}
	cfg.StaticGrants = map[string]int64{testSale: 100}
	return cfg
}

// newEnv starts redis-server and a seller on a real listener.
func newEnv(t testing.TB, mutate func(*Config), redisArgs ...string) *testEnv {
	t.Helper()
	return newEnvDeps(t, mutate, nil, redisArgs...)
}

// newEnvDeps is newEnv with a hook that completes the Deps (Redis and
// Registry are set already).
func newEnvDeps(t testing.TB, mutate func(*Config), deps func(*Deps), redisArgs ...string) *testEnv {
	t.Helper()
	e := &testEnv{t: t, clock: newFakeClock(), reg: prometheus.NewRegistry()}
	e.redis = redistest.Start(t, redisArgs...)
	e.rdb = e.redis.Client()
	srv := e.startServer(t, mutate, deps)
	e.srv = srv
	e.url = "http://" + srv.Addr()
	e.client = &http.Client{
		// Every exchange is validated against openapi.yaml (apicheck_test.go).
		Transport: &apiCheck{t: t, base: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}},
		// Tests look at redirects themselves.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// startServer starts a seller on e's Redis, clock and registry, closed
// when the test ends.
func (e *testEnv) startServer(t testing.TB, mutate func(*Config), deps func(*Deps)) *Server {
	t.Helper()
	cfg := testConfig(e.clock)
	if mutate != nil {
		mutate(&cfg)
	}
	d := Deps{Redis: e.rdb, Registry: e.reg}
	if deps != nil {
		deps(&d)
	}
	srv, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return srv
}

func token(t testing.TB, secret []byte, user, home string, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": user, "exp": exp.Unix()}
	if home != "" {
		claims["home_region"] = home
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// answer is a decoded HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) code() string {
	var e errorBody
	_ = json.Unmarshal(a.body, &e)
	return e.Code
}

func (a answer) resv(t testing.TB) ReservationJSON {
	t.Helper()
	var r ReservationJSON
	if err := json.Unmarshal(a.body, &r); err != nil || r.ReservationID == "" {
		t.Fatalf("not a reservation (status %d): %s", a.status, a.body)
	}
	return r
}

func (e *testEnv) do(method, path, auth string, body any) answer {
	e.t.Helper()
	a, err := e.try(context.Background(), method, path, auth, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *testEnv) try(ctx context.Context, method, path, auth string, body any) (answer, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return answer{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		return answer{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// buy sends a buy as user (token for home region eu).
func (e *testEnv) buy(user, requestID string) answer {
	e.t.Helper()
	tok := token(e.t, testSecret, user, "eu", e.clock.Now().Add(time.Hour))
	return e.do("POST", "/v1/flash-sale/buy", tok, map[string]string{"itemId": testSale, "requestId": requestID})
}

func (e *testEnv) finish(op, user, id string) answer {
	e.t.Helper()
	tok := token(e.t, testSecret, user, "eu", e.clock.Now().Add(time.Hour))
	return e.do("POST", "/v1/flash-sale/reservations/"+id+"/"+op, tok, map[string]string{"itemId": testSale})
}

func (e *testEnv) counters() redisstore.Counters {
	e.t.Helper()
	c, err := e.srv.Store().Counters(context.Background(), testSale)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *testEnv) dbsize() int64 {
	e.t.Helper()
	n, err := e.rdb.DBSize(context.Background()).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// metric reads one sample from the registry; labels must match exactly
// the non-constant labels given.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func expect(t testing.TB, a answer, status int, code string) {
	t.Helper()
	if a.status != status || (code != "" && a.code() != code) {
		t.Fatalf("got %d %s, want %d %s", a.status, a.body, status, code)
	}
}

// TestHTTPConcurrentBuyers: 2,000 buyers at once for 100 units. Exactly 100
// are reserved, to 100 different users, everyone else hears all_reserved
// (the units are held, not paid for: they may come back), and Redis agrees.
func TestHTTPConcurrentBuyers(t *testing.T) {
	// Correctness, not latency: on 2 shared cores under -race a burst of
	// 2,000 can queue for seconds, which must not turn into 503s here.
	e := newEnv(t, func(c *Config) { c.RedisTimeout = time.Minute })
	const buyers = 2000
	// Tokens are signed up front so the buyers hit the server together.
	toks := make([]string, buyers)
	for i := range toks {
		toks[i] = token(t, testSecret, fmt.Sprintf("user-%d", i), "eu", e.clock.Now().Add(time.Hour))
	}
	type result struct {
		user string
		a    answer
		err  error
	}
	results := make([]result, buyers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// As a real client does: a lost connection or a 503 is retried
			// with the same requestId, which can never reserve twice.
			var a answer
			var err error
			for range 5 {
				a, err = e.try(context.Background(), "POST", "/v1/flash-sale/buy", toks[i],
					map[string]string{"itemId": testSale, "requestId": fmt.Sprintf("req-%d", i)})
				if err == nil && (a.status != http.StatusServiceUnavailable || a.code() == CodeAllReserved) {
					break
				}
			}
			results[i] = result{fmt.Sprintf("user-%d", i), a, err}
		}()
	}
	close(start)
	wg.Wait()

	users, ids := map[string]bool{}, map[string]bool{}
	statuses := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("%s: %v", r.user, r.err)
		}
		statuses[fmt.Sprintf("%d %s", r.a.status, r.a.code())]++
		if r.a.status != http.StatusCreated && r.a.status != http.StatusOK {
			continue
		}
		rv := r.a.resv(t)
		if rv.UserID != r.user || users[r.user] || ids[rv.ReservationID] {
			t.Fatalf("reservation %+v: user %s twice, another's, or id reused", rv, r.user)
		}
		users[r.user], ids[rv.ReservationID] = true, true
	}
	// A retry of a request whose first answer was lost answers 200.
	if statuses["201 "]+statuses["200 "] != 100 || statuses["503 all_reserved"] != buyers-100 {
		t.Fatalf("answers %v: want 100 reservations and %d 503 all_reserved", statuses, buyers-100)
	}
	c := e.counters()
	if c.Reserved != 100 || c.Sold != 0 || c.Available() != 0 || int64(len(reservedRequests(t, e))) != 100 {
		t.Fatalf("counters %+v: want 100 reserved, 0 available, 100 reservations made", c)
	}
	held, err := e.rdb.HLen(context.Background(), layout.SaleKey(testSale, "users")).Result()
	if err != nil || held != 100 {
		t.Fatalf("users hash holds %d (%v), want 100", held, err)
	}
	if got := metric(t, e.reg, "flashsale_seller_requests_total", map[string]string{"route": "buy", "outcome": "reserved"}); got != 100 {
		t.Fatalf("reserved requests metric %v, want 100", got)
	}
}

// TestRetrySameRequestID: a client that gave up (closed the connection)
// and retried, plus a burst of concurrent retries, all get the one
// reservation; Redis holds exactly one.
func TestRetrySameRequestID(t *testing.T) {
	e := newEnv(t, nil)
	tok := token(t, testSecret, "alice", "eu", e.clock.Now().Add(time.Hour))
	body := `{"itemId":"phone","requestId":"alice-1"}`

	// A client timeout: the request is sent, the client stops waiting.
	ctx, cancel := context.WithCancel(context.Background())
	reqSent := make(chan struct{})
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/flash-sale/buy", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Body = &signalBody{Reader: strings.NewReader(body), eof: reqSent}
	req.ContentLength = int64(len(body))
	errc := make(chan error, 1)
	go func() {
		resp, err := e.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-reqSent
	cancel()
	<-errc
	// The server ran the abandoned call if it was already sent to Redis,
	// or dropped it unsent (its caller is gone: DESIGN §5 step 5); either
	// way the retries below converge on exactly one reservation.
	made := e.counters().Reserved
	if made > 1 {
		t.Fatalf("%d reservations for one requestId", made)
	}

	var wg sync.WaitGroup
	answers := make([]answer, 20)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], _ = e.try(context.Background(), "POST", "/v1/flash-sale/buy", tok, body)
		}()
	}
	wg.Wait()
	var id string
	created := 0
	for _, a := range answers {
		// 201 once at most, and only if the abandoned call was dropped:
		// then one retry made the reservation and the others found it.
		if a.status == http.StatusCreated {
			created++
		} else {
			expect(t, a, http.StatusOK, "")
		}
		r := a.resv(t)
		if id == "" {
			id = r.ReservationID
		}
		if r.ReservationID != id || r.UserID != "alice" || r.State != "active" {
			t.Fatalf("retry answered %+v, want reservation %s of alice", r, id)
		}
	}
	if created > 1-int(made) {
		t.Fatalf("%d retries made a reservation (%d existed before them)", created, made)
	}
	if c := e.counters(); c.Reserved != 1 || int64(len(reservedRequests(t, e))) != 1 {
		t.Fatalf("counters %+v after retries: want exactly one reservation", c)
	}
	// A new requestId of the same user is a second purchase: over the limit.
	expect(t, e.buy("alice", "alice-2"), http.StatusConflict, CodeAlreadyBought)
	// Another user reusing alice's requestId learns nothing about it.
	expect(t, e.buy("bob", "alice-1"), http.StatusConflict, CodeRequestIDConflict)
	if created > 1-int(made) {
		t.Fatalf("%d retries made a reservation (%d existed before them)", created, made)
	}
	if c := e.counters(); c.Reserved != 1 || int64(len(reservedRequests(t, e))) != 1 {
		t.Fatalf("counters %+v: the refused attempts changed Redis", c)
	}
}

// signalBody closes eof once the whole body has been read by the transport.
type signalBody struct {
	io.Reader
	eof  chan struct{}
	once sync.Once
}

func (b *signalBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.once.Do(func() { close(b.eof) })
	}
	return n, err
}
func (b *signalBody) Close() error { return nil }

// waitFor polls cond: for effects the test cannot wait on directly.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testwait.For(t, "the condition", 10*time.Second, cond)
}

// TestExpiryThenResale: a reservation past its TTL cannot be confirmed; the
// sweeper returns its unit, which another buyer then gets.
func TestExpiryThenResale(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StaticGrants[testSale] = 1 })
	a := e.buy("alice", "a1")
	expect(t, a, http.StatusCreated, "")
	ra := a.resv(t)
	if !ra.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("expiresAt %v, want now+TTL %v", ra.ExpiresAt, e.clock.Now().Add(time.Minute))
	}
	expect(t, e.buy("bob", "b1"), http.StatusServiceUnavailable, CodeAllReserved)

	e.clock.Advance(time.Minute)
	// Past its time but not yet swept: confirm is refused all the same.
	expect(t, e.finish("confirm", "alice", ra.ReservationID), http.StatusConflict, CodeNotActive)

	n, err := e.srv.sweeper.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("sweep expired %d (%v), want 1", n, err)
	}
	if got := metric(t, e.reg, "flashsale_seller_reservations_expired_total", map[string]string{"sale": testSale}); got != 1 {
		t.Fatalf("expired metric %v, want 1", got)
	}
	expect(t, e.finish("confirm", "alice", ra.ReservationID), http.StatusConflict, CodeNotActive)
	expect(t, e.finish("cancel", "alice", ra.ReservationID), http.StatusConflict, CodeNotActive)

	b := e.buy("bob", "b2")
	expect(t, b, http.StatusCreated, "")
	rb := b.resv(t)
	expect(t, e.finish("confirm", "bob", rb.ReservationID), http.StatusOK, "")
	if c := e.counters(); c.Sold != 1 || c.Reserved != 0 || c.Available() != 0 {
		t.Fatalf("counters %+v: want 1 sold, nothing reserved or available", c)
	}
	// The retry of alice's first request still names her expired reservation.
	r := e.buy("alice", "a1")
	expect(t, r, http.StatusOK, "")
	if got := r.resv(t); got.ReservationID != ra.ReservationID || got.State != "expired" {
		t.Fatalf("retry after expiry answered %+v", got)
	}
}

// TestConfirmCancel: only the reservation's user may act; confirm and
// cancel are idempotent and exclusive; a cancel returns the unit.
func TestConfirmCancel(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StaticGrants[testSale] = 1 })
	r1 := e.buy("alice", "a1").resv(t)
	expect(t, e.finish("confirm", "mallory", r1.ReservationID), http.StatusForbidden, CodeNotYours)
	expect(t, e.finish("cancel", "mallory", r1.ReservationID), http.StatusForbidden, CodeNotYours)
	expect(t, e.finish("confirm", "alice", "999"), http.StatusNotFound, CodeUnknownResv)

	got := e.finish("cancel", "alice", r1.ReservationID)
	expect(t, got, http.StatusOK, "")
	if got.resv(t).State != "cancelled" {
		t.Fatalf("cancel answered %s", got.body)
	}
	expect(t, e.finish("cancel", "alice", r1.ReservationID), http.StatusOK, "")
	expect(t, e.finish("confirm", "alice", r1.ReservationID), http.StatusConflict, CodeNotActive)

	// The cancelled unit is for sale again at once.
	r2 := e.buy("bob", "b1")
	expect(t, r2, http.StatusCreated, "")
	id := r2.resv(t).ReservationID
	// itemId may come in the query, with an empty body.
	tok := token(t, testSecret, "bob", "eu", e.clock.Now().Add(time.Hour))
	conf := e.do("POST", "/v1/flash-sale/reservations/"+id+"/confirm?itemId="+testSale, tok, nil)
	expect(t, conf, http.StatusOK, "")
	if conf.resv(t).State != "confirmed" {
		t.Fatalf("confirm answered %s", conf.body)
	}
	expect(t, e.finish("confirm", "bob", id), http.StatusOK, "")
	expect(t, e.finish("cancel", "bob", id), http.StatusConflict, CodeNotActive)
	if c := e.counters(); c.Sold != 1 || c.Reserved != 0 {
		t.Fatalf("counters %+v, want 1 sold", c)
	}
}

// TestSoldOutClearedByGrant: a seller run from a config file is its own
// whole sale: with every unit paid for it answers 410 sold_out, from
// memory, and a larger grant applied by someone else clears it at the
// next counter refresh.
func TestSoldOutClearedByGrant(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StaticGrants[testSale] = 1 })
	r := e.buy("alice", "a1")
	expect(t, r, http.StatusCreated, "")
	expect(t, e.finish("confirm", "alice", r.resv(t).ReservationID), http.StatusOK, "")
	// Sold and held are told apart by the counters, which the refresh
	// reads every RefreshInterval (and at once after a dry answer).
	e.srv.refreshAll(context.Background())
	expect(t, e.buy("bob", "b1"), http.StatusGone, CodeSoldOut)
	if p := e.srv.Sales().Get(testSale).Phase(e.clock.Now()); p != PhaseSoldOut {
		t.Fatalf("phase %v after a sold-out answer, want sold_out", p)
	}
	if s := e.status(); s.State != "sold_out" || s.Remaining != 0 || s.RegionRemaining != 0 {
		t.Fatalf("status %+v, want sold_out with 0 remaining", s)
	}
	// From memory: even with Redis gone the answer is the same.
	e.redis.Kill()
	expect(t, e.buy("carol", "c1"), http.StatusGone, CodeSoldOut)
	e.redis.Restart()

	if _, err := e.srv.Store().ApplyGrant(context.Background(), testSale, 0, 2); err != nil {
		t.Fatal(err)
	}
	e.srv.refreshAll(context.Background())
	if s := e.status(); s.State != "open" || s.Remaining != 1 || s.RegionRemaining != 1 {
		t.Fatalf("status %+v after a grant, want open with 1 remaining", s)
	}
	expect(t, e.buy("bob", "b2"), http.StatusCreated, "")
	e.srv.refreshAll(context.Background())
	// Bob has not paid: his unit may come back.
	if s := e.status(); s.State != "all_reserved" || s.Remaining != 0 {
		t.Fatalf("status %+v, want all_reserved with 0 remaining", s)
	}
	if got := metric(t, e.reg, "flashsale_seller_remaining_units", map[string]string{"sale": testSale}); got != 0 {
		t.Fatalf("remaining metric %v, want 0", got)
	}
}

func (e *testEnv) status() StatusJSON {
	e.t.Helper()
	a := e.do("GET", "/v1/flash-sale/status?itemId="+testSale, "", nil)
	expect(e.t, a, http.StatusOK, "")
	var s StatusJSON
	if err := json.Unmarshal(a.body, &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// TestNotStartedNoRedisIO: a sale that has not started is answered from
// memory with 425 and Retry-After, even with Redis dead; so is an ended one.
func TestNotStartedNoRedisIO(t *testing.T) {
	var clock *fakeClock
	e := newEnv(t, func(c *Config) {
		now := c.Now()
		c.Sales = append(c.Sales,
			layout.SaleSpec{ID: "later", Total: 5, StartsAt: now.Add(90 * time.Second)},
			layout.SaleSpec{ID: "over", Total: 5, StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)},
		)
	})
	clock = e.clock
	e.redis.Kill()
	tok := token(t, testSecret, "alice", "eu", clock.Now().Add(time.Hour))
	a := e.do("POST", "/v1/flash-sale/buy", tok, `{"itemId":"later","requestId":"r1"}`)
	expect(t, a, http.StatusTooEarly, CodeNotStarted)
	if ra := a.header.Get("Retry-After"); ra != "90" {
		t.Fatalf("Retry-After %q, want 90", ra)
	}
	// The body's hint is jittered around the same wait: [45 s, 135 s).
	var eb errorBody
	if err := json.Unmarshal(a.body, &eb); err != nil || eb.RetryAfterMs < 45_000 || eb.RetryAfterMs >= 135_000 {
		t.Fatalf("retryAfterMs %d (err %v), want in [45000, 135000): %s", eb.RetryAfterMs, err, a.body)
	}
	expect(t, e.do("POST", "/v1/flash-sale/buy", tok, `{"itemId":"over","requestId":"r1"}`), http.StatusGone, CodeSaleEnded)
	// An open sale needs Redis: a dead one is a 503, never a guess.
	e.notReady(t)
	expect(t, e.buy("alice", "r2"), http.StatusServiceUnavailable, CodeNotReady)
	// The clock reaches the start: the sale opens (Redis permitting).
	clock.Advance(90 * time.Second)
	e.redis.Restart()
	e.srv.CheckReady(context.Background())
	expect(t, e.do("POST", "/v1/flash-sale/buy", tok, `{"itemId":"later","requestId":"r3"}`), http.StatusGone, CodeSoldOut)
}

// notReady runs readiness passes with Redis down until the seller is not
// ready: a pass whose check timed out (go-redis retrying its dials to a
// dead server can take the whole deadline) holds readiness for
// maxSlowChecks passes, as a slow Redis does; one more must drop it.
func (e *testEnv) notReady(t *testing.T) {
	t.Helper()
	for range maxSlowChecks + 1 {
		e.srv.CheckReady(context.Background())
		if !e.srv.ready.Load() {
			return
		}
	}
	t.Fatalf("still ready after %d readiness passes with Redis down", maxSlowChecks+1)
}

// TestReadyz: ready with appendfsync always; not ready (and not selling)
// with everysec unless weak durability is allowed.
func TestReadyz(t *testing.T) {
	t.Run("durable", func(t *testing.T) {
		// The maintenance pass runs at Start and when the test says.
		e := newEnv(t, func(c *Config) { c.HealthInterval = time.Hour })
		a := e.do("GET", "/readyz", "", nil)
		expect(t, a, http.StatusOK, "")
		expect(t, e.do("GET", "/healthz", "", nil), http.StatusOK, "")
		// Redis forgot the scripts (as after a restart). The probe only
		// reads: it repairs nothing; the maintenance pass (every
		// HealthInterval) reloads them.
		ctx := context.Background()
		if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		expect(t, e.do("GET", "/readyz", "", nil), http.StatusOK, "")
		if ok, err := e.srv.Store().ScriptsLoaded(ctx); ok || err != nil {
			t.Fatalf("scripts loaded %v (%v) by a readiness probe: it must have no side effects", ok, err)
		}
		e.srv.CheckReady(ctx)
		if ok, err := e.srv.Store().ScriptsLoaded(ctx); !ok || err != nil {
			t.Fatalf("scripts loaded %v (%v) after the maintenance pass", ok, err)
		}
		e.redis.Kill()
		e.notReady(t)
		expect(t, e.do("GET", "/readyz", "", nil), http.StatusServiceUnavailable, "")
		if metric(t, e.reg, "flashsale_seller_ready", nil) != 0 {
			t.Fatal("ready gauge still 1 with Redis down")
		}
	})
	t.Run("everysec", func(t *testing.T) {
		e := newEnv(t, nil, "--appendfsync", "everysec")
		a := e.do("GET", "/readyz", "", nil)
		expect(t, a, http.StatusServiceUnavailable, "")
		var rd Readiness
		if err := json.Unmarshal(a.body, &rd); err != nil || rd.Ready || !strings.Contains(rd.Durability, "appendfsync") {
			t.Fatalf("readyz %s: want not ready naming appendfsync", a.body)
		}
		expect(t, e.buy("alice", "a1"), http.StatusServiceUnavailable, CodeNotReady)
		if c := e.counters(); c.Reserved != 0 {
			t.Fatalf("counters %+v: a non-durable seller reserved", c)
		}
	})
	t.Run("everysec allowed", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.AllowWeakDurability = true }, "--appendfsync", "everysec")
		expect(t, e.do("GET", "/readyz", "", nil), http.StatusOK, "")
		expect(t, e.buy("alice", "a1"), http.StatusCreated, "")
	})
}

// TestRateLimits: per-user and per-IP buckets answer 429 with Retry-After
// before any Redis I/O, and refill with time.
func TestRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.UserRate, c.UserBurst = 1, 2 })
	expect(t, e.buy("alice", "a1"), http.StatusCreated, "")
	expect(t, e.buy("alice", "a2"), http.StatusConflict, CodeAlreadyBought)
	before, keys := e.counters(), e.dbsize()
	a := e.buy("alice", "a3")
	expect(t, a, http.StatusTooManyRequests, CodeRateLimited)
	if a.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q, want 1", a.header.Get("Retry-After"))
	}
	if e.counters() != before || e.dbsize() != keys {
		t.Fatal("a rate-limited request changed Redis")
	}
	expect(t, e.buy("bob", "b1"), http.StatusCreated, "") // other users are not affected
	e.clock.Advance(time.Second)
	expect(t, e.buy("alice", "a4"), http.StatusConflict, CodeAlreadyBought)

	ip := newEnv(t, func(c *Config) { c.IPRate, c.IPBurst = 1, 1 })
	expect(t, ip.buy("alice", "a1"), http.StatusCreated, "")
	expect(t, ip.buy("bob", "b1"), http.StatusTooManyRequests, CodeRateLimited)
}

// TestServedDocs: the OpenAPI document and the metrics are served.
func TestServedDocs(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do("GET", "/openapi.yaml", "", nil)
	if a.status != http.StatusOK || !bytes.Equal(a.body, openAPI) || !bytes.Contains(a.body, []byte("/v1/flash-sale/buy:")) {
		t.Fatalf("openapi.yaml: %d, %d bytes", a.status, len(a.body))
	}
	e.buy("alice", "a1")
	m := e.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`flashsale_seller_requests_total{outcome="reserved",region="eu",route="buy"} 1`,
		`flashsale_seller_request_duration_seconds_bucket`,
		`flashsale_seller_remaining_units{region="eu",sale="phone"}`,
		`flashsale_seller_ready{region="eu"} 1`,
	} {
		if !bytes.Contains(m.body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	expect(t, e.do("GET", "/nope", "", nil), http.StatusNotFound, "not_found")
}

// TestInsecureDevIdentity: the body's userId is believed, and the server
// says so in status and in a header.
func TestInsecureDevIdentity(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InsecureDevIdentity = true; c.JWT = JWTConfig{} })
	a := e.do("POST", "/v1/flash-sale/buy", "", `{"itemId":"phone","userId":"alice","requestId":"a1"}`)
	expect(t, a, http.StatusCreated, "")
	if a.header.Get("X-Flashsale-Identity") != "insecure-dev" {
		t.Fatal("no insecure identity header")
	}
	expect(t, e.do("POST", "/v1/flash-sale/buy", "", `{"itemId":"phone","requestId":"a2"}`), http.StatusBadRequest, CodeBadUserID)
	id := a.resv(t).ReservationID
	expect(t, e.do("POST", "/v1/flash-sale/reservations/"+id+"/confirm?itemId=phone&userId=bob", "", nil), http.StatusForbidden, CodeNotYours)
	expect(t, e.do("POST", "/v1/flash-sale/reservations/"+id+"/confirm", "", `{"itemId":"phone","userId":"alice"}`), http.StatusOK, "")
	if s := e.status(); s.Identity != "insecure-dev" || s.Warning == "" {
		t.Fatalf("status %+v does not warn about the insecure identity", s)
	}
}

// TestDemandAndRemove: buy attempts reach the region's Redis as demand for
// the region agent; a removed sale answers 404 and leaves the metrics.
func TestDemandAndRemove(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RefreshInterval = time.Hour })
	e.srv.refreshAll(context.Background())
	attempts := func() int64 {
		e.srv.flushDemand(context.Background())
		n, _ := e.rdb.Get(context.Background(), layout.SaleKey(testSale, "attempts")).Int64()
		return n
	}
	if n := attempts(); n != 0 {
		t.Fatalf("%d attempts before any attempt", n)
	}
	for i := range 5 {
		e.buy(fmt.Sprint("u", i), fmt.Sprint("r", i))
	}
	if n := attempts(); n != 5 {
		t.Fatalf("%d attempts published after 5 buys", n)
	}
	e.srv.refreshAll(context.Background())
	if metric(t, e.reg, "flashsale_seller_remaining_units", map[string]string{"sale": testSale}) != 95 {
		t.Fatal("remaining gauge is not 95 after 5 reservations")
	}
	e.srv.Sales().Remove(testSale)
	expect(t, e.buy("u9", "r9"), http.StatusNotFound, CodeUnknownSale)
	e.srv.refreshAll(context.Background())
	m := e.do("GET", "/metrics", "", nil)
	if bytes.Contains(m.body, []byte(`sale="phone"} 95`)) {
		t.Fatal("removed sale still in the remaining gauge")
	}
}

// TestLifecycle: Close is safe on nil, before Start and twice; cancelling
// Start's context stops serving; nothing is left running afterwards.
func TestLifecycle(t *testing.T) {
	var nilSrv *Server
	if err := nilSrv.Close(); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	rdb := rs.Client()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	baseline := runtime.NumGoroutine()

	unstarted, err := New(testConfig(clock), Deps{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}

	srv, err := New(testConfig(clock), Deps{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err == nil {
		t.Fatal("second Start succeeded")
	}
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()

	cancel()
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("still serving 10s after its context ended")
	}
	for range 2 {
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= baseline })
}

// TestHaltedAndUnavailableAnswers: a region halted by its agent (to
// reconcile) answers 503 halted, and a Redis that went away between
// readiness checks answers 503 unavailable; both are retryable (Retry-After
// and retryAfterMs) and neither reserved anything.
func TestHaltedAndUnavailableAnswers(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.srv.Store().SetHalted(ctx, testSale, 0, true); err != nil {
		t.Fatal(err)
	}
	before := e.counters()
	a := e.buy("alice", "h1")
	expect(t, a, http.StatusServiceUnavailable, CodeHalted)
	var eb errorBody
	if err := json.Unmarshal(a.body, &eb); err != nil || a.header.Get("Retry-After") == "" || eb.RetryAfterMs <= 0 {
		t.Fatalf("halted answer not retryable: %v %v %s", a.header, err, a.body)
	}
	if e.counters() != before {
		t.Fatal("a halted region reserved")
	}
	if err := e.srv.Store().SetHalted(ctx, testSale, 0, false); err != nil {
		t.Fatal(err)
	}
	e.srv.Sales().Get(testSale).halted.Store(false) // the refresh loop would notice too
	expect(t, e.buy("alice", "h2"), http.StatusCreated, "")

	// Readiness has not run since: the seller still thinks Redis is up. A
	// call on a pooled connection may have been sent before it broke
	// (outcome_unknown); once the pool redials, nothing can have been sent.
	e.redis.Kill()
	for try := 0; ; try++ {
		a = e.buy("bob", "u"+strconv.Itoa(try))
		if a.header.Get("Retry-After") == "" {
			t.Fatalf("refusal without Retry-After: %d %s", a.status, a.body)
		}
		if a.code() == CodeUnavailable {
			break
		}
		expect(t, a, http.StatusServiceUnavailable, CodeOutcomeUnknown)
		if try == 3 {
			t.Fatal("a dead Redis never answered unavailable")
		}
	}
}
