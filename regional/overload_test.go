package regional

import (
	"context"
	"encoding/json"
	"errors"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// evalshaCalls reads EVALSHA's call count from INFO commandstats.
func evalshaCalls(t testing.TB, e *testEnv) int {
	t.Helper()
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// reservedRequests maps every requestId holding a reservation in Redis to
// its reservation id.
func reservedRequests(t testing.TB, e *testEnv) map[string]string {
	t.Helper()
	m, err := e.rdb.HGetAll(context.Background(), layout.SaleKey(testSale, "req")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// batcherIdle waits until no reserve batch is queued or in flight.
func batcherIdle(t *testing.T, b *redisstore.Batcher) {
	waitFor(t, func() bool { return b.Idle() })
}

// TestOverloadPausedRedis: Redis stalls (SIGSTOP) under a burst of buyers,
// some of whose clients give up early. The limit sheds what is over it
// before Redis; no unit ends up held for a buyer told anything but
// "reserved" or "outcome_unknown" (or who heard nothing); and every
// outcome_unknown, retried with its requestId, resolves to exactly one
// reservation or a definite answer.
func TestOverloadPausedRedis(t *testing.T) {
	const limit, buyers = 8, 80
	e := newEnv(t, func(c *Config) {
		c.RedisTimeout = 300 * time.Millisecond
		c.Admission = LimitConfig{Initial: limit, Min: limit, Max: limit, Target: time.Hour, Backoff: 0.5}
	})
	expect(t, e.buy("warm", "warm-1"), http.StatusCreated, "")
	before := evalshaCalls(t, e)

	e.redis.Pause()
	type told struct {
		req, user, code string
		status          int
		heard           bool
	}
	answers := make([]told, buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		if i == 1 {
			// Buyer 0's call is sent (the batch is stuck in Redis) before
			// the others come.
			waitFor(t, func() bool {
				running, waiting := e.srv.batcher.Queue(testSale)
				return running == 1 && waiting == 0
			})
		}
		wg.Go(func() {
			user, req := fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i)
			answers[i] = told{req: req, user: user}
			// A third of the clients give up before the seller's deadline.
			timeout := 2 * time.Second
			if i%3 == 1 {
				timeout = 50 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			tok := token(t, testSecret, user, "eu", e.clock.Now().Add(time.Hour))
			a, err := e.try(ctx, "POST", "/v1/flash-sale/buy", tok, map[string]string{"itemId": testSale, "requestId": req})
			if err == nil {
				answers[i].heard, answers[i].status, answers[i].code = true, a.status, a.code()
			}
		})
	}
	wg.Wait()
	e.redis.Resume()
	batcherIdle(t, e.srv.batcher)
	after := evalshaCalls(t, e)

	counts := map[string]int{}
	for _, a := range answers {
		switch {
		case !a.heard:
			counts["no answer"]++
		case a.status == http.StatusCreated:
			counts["reserved"]++
		default:
			counts[a.code]++
		}
	}
	t.Logf("answers while Redis was paused: %v; EVALSHA calls %d", counts, after-before)
	// Shed before Redis: at most one script call per admitted request.
	if after-before > limit {
		t.Fatalf("%d EVALSHA calls for a limit of %d in flight", after-before, limit)
	}
	if counts[CodeOverloaded] < buyers-limit-counts["no answer"] {
		t.Fatalf("only %d shed as overloaded of %d buyers over a limit of %d: %v", counts[CodeOverloaded], buyers, limit, counts)
	}

	held := reservedRequests(t, e)
	var unknown []told
	for _, a := range answers {
		_, isHeld := held[a.req]
		okToHold := !a.heard || a.status == http.StatusCreated || a.code == CodeOutcomeUnknown
		if isHeld && !okToHold {
			t.Errorf("request %s holds a unit but its buyer was told %d %s", a.req, a.status, a.code)
		}
		if a.heard && a.code == CodeOutcomeUnknown || !a.heard {
			unknown = append(unknown, a)
		}
	}
	if counts[CodeOutcomeUnknown] < 1 {
		t.Fatalf("buyer 0's call was sent to the paused Redis, yet no one heard outcome_unknown: %v", counts)
	}
	if len(held) > 1+limit {
		t.Fatalf("%d reservations for %d admitted", len(held), limit)
	}

	// Every unknown resolves on retry to exactly one answer, which Redis
	// agrees with: the unit held is returned (200 duplicate), or one is
	// made now (201), never two.
	for _, a := range unknown {
		_, wasHeld := held[a.req]
		got := e.buy(a.user, a.req)
		switch {
		case wasHeld && got.status != http.StatusOK:
			t.Errorf("retry of %s (held) answered %d %s, want 200 duplicate", a.req, got.status, got.body)
		case !wasHeld && got.status != http.StatusCreated:
			t.Errorf("retry of %s (not held) answered %d %s, want 201", a.req, got.status, got.body)
		}
		if got.status < 300 && got.resv(t).RequestID != a.req {
			t.Errorf("retry of %s answered another request's reservation: %s", a.req, got.body)
		}
	}
	if n, err := e.rdb.HLen(context.Background(), layout.SaleKey(testSale, "users")).Result(); err != nil || int(n) != len(reservedRequests(t, e)) {
		t.Fatalf("users %d (err %v) != reservations %d: someone holds two", n, err, len(reservedRequests(t, e)))
	}
	c := e.counters()
	if got := int(c.Reserved); got != len(reservedRequests(t, e)) {
		t.Fatalf("ledger reserved %d, requests holding %d", got, len(reservedRequests(t, e)))
	}
}

// TestRequestOutcome: GET /v1/flash-sale/requests/{requestId} answers the
// buyer what became of a buy, "none" before, the reservation after, and
// nothing to another user.
func TestRequestOutcome(t *testing.T) {
	e := newEnv(t, nil)
	get := func(user, req string) answer {
		tok := token(t, testSecret, user, "eu", e.clock.Now().Add(time.Hour))
		return e.do("GET", "/v1/flash-sale/requests/"+req+"?itemId="+testSale, tok, nil)
	}
	var r RequestJSON
	a := get("alice", "q1")
	expect(t, a, http.StatusOK, "")
	if err := json.Unmarshal(a.body, &r); err != nil || r.Outcome != "none" || r.Reservation != nil || r.RequestID != "q1" {
		t.Fatalf("before the buy: %s", a.body)
	}
	resv := e.buy("alice", "q1").resv(t)
	a = get("alice", "q1")
	expect(t, a, http.StatusOK, "")
	r = RequestJSON{}
	if err := json.Unmarshal(a.body, &r); err != nil || r.Outcome != "reserved" || r.Reservation == nil || r.Reservation.ReservationID != resv.ReservationID {
		t.Fatalf("after the buy: %s", a.body)
	}
	expect(t, get("mallory", "q1"), http.StatusForbidden, CodeNotYourRequest)
	expect(t, e.do("GET", "/v1/flash-sale/requests/q1?itemId="+testSale, "", nil), http.StatusUnauthorized, CodeUnauthenticated)
	expect(t, get("alice", "q1?itemId=nope"), http.StatusBadRequest, "")
}

func isErr(err, target error) bool { return err != nil && errors.Is(err, target) }

// TestShedBeforeVerify: while every Redis slot is taken and there is no
// room to wait, a buy is shed before its token is verified (the costly
// part of a refusal): a forged token hears 503 overloaded, and 401 once
// a slot is free. The shed buy still counts as demand.
func TestShedBeforeVerify(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Admission = LimitConfig{Initial: 1, Min: 1, Max: 1, Target: time.Hour, Backoff: 0.5}
	})
	forged := token(t, []byte(strings.Repeat("x", 32)), "mallory", "eu", e.clock.Now().Add(time.Hour))
	body := map[string]string{"itemId": testSale, "requestId": "m1"}
	held, _, ok := e.srv.adm.enter(testSale, time.Now())
	if !ok {
		t.Fatal("the only slot was not free")
	}
	before := e.attempts()
	a, err := e.try(context.Background(), "POST", "/v1/flash-sale/buy", forged, body)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, a, http.StatusServiceUnavailable, CodeOverloaded)
	if a.retryHint(t) <= 0 {
		t.Fatalf("shed without a retry hint: %s", a.body)
	}
	held.done(false, time.Now())
	a, err = e.try(context.Background(), "POST", "/v1/flash-sale/buy", forged, body)
	if err != nil {
		t.Fatal(err)
	}
	if a.status != http.StatusUnauthorized {
		t.Fatalf("forged token with a free slot: %d %s, want 401", a.status, a.body)
	}
	if got := e.attempts() - before; got < 1 {
		t.Fatalf("demand counted %d for the shed buy, want it counted", got)
	}
}

// TestReadinessHoldsThroughSlowChecks: a readiness check that only times
// out (Redis paused, as overloaded) does not turn a ready seller not
// ready at once, which would answer every buy not_ready; maxSlowChecks
// slow passes in a row do, and a check that answers makes it ready again.
func TestReadinessHoldsThroughSlowChecks(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RedisTimeout = 300 * time.Millisecond })
	if !e.srv.CheckReady(context.Background()).Ready {
		t.Fatal("not ready before Redis was paused")
	}
	e.redis.Pause()
	rd := e.srv.CheckReady(context.Background())
	if !rd.Ready || !strings.HasPrefix(rd.Redis, "slow") {
		e.redis.Resume()
		t.Fatalf("one slow check: %+v; want still ready, Redis slow", rd)
	}
	// The health loop keeps checking: after maxSlowChecks slow passes the
	// seller is not ready.
	waitFor(t, func() bool { return !e.srv.LastReadiness().Ready })
	e.redis.Resume()
	waitFor(t, func() bool { return e.srv.LastReadiness().Ready })
}
