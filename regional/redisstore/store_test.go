package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/quota/layout"
)

var t0 = time.UnixMilli(1_700_000_000_000)

func buy(user, req string, now time.Time) ReserveRequest {
	return ReserveRequest{User: user, RequestID: req, Now: now, TTL: 10 * time.Second, PerUserLimit: 1}
}

func mustCounters(t testing.TB, s *Store, sale string) Counters {
	t.Helper()
	c, err := s.Counters(context.Background(), sale)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustGrant(t testing.TB, s *Store, sale string, fence, n int64) {
	t.Helper()
	if _, err := s.ApplyGrant(context.Background(), sale, fence, n); err != nil {
		t.Fatal(err)
	}
}

func mustReserve(t testing.TB, s *Store, sale string, r ReserveRequest, want quota.Outcome) quota.Reservation {
	t.Helper()
	res, err := s.Reserve(context.Background(), sale, r)
	if err != nil {
		t.Fatalf("reserve %+v: %v", r, err)
	}
	if res.Outcome != want {
		t.Fatalf("reserve %+v: %v, want %v", r, res.Outcome, want)
	}
	return res.Reservation
}

// allReservations reads every reservation hash of sale from Redis.
func allReservations(t testing.TB, s *Store, rdb *redis.Client, sale string) map[string]*quota.Reservation {
	t.Helper()
	ctx := context.Background()
	out := map[string]*quota.Reservation{}
	prefix := layout.ResvKey(sale, "")
	iter := rdb.Scan(ctx, 0, strings.ReplaceAll(prefix, "{", `\{`)+"*", 1000).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), prefix)
		r, err := s.Reservation(ctx, sale, id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = &r
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// reservationCount is how many reservations sale ever had: the req hash
// maps each one's requestId to it and is never trimmed.
func reservationCount(t testing.TB, rdb *redis.Client, sale string) int64 {
	t.Helper()
	n, err := rdb.HLen(context.Background(), layout.SaleKey(sale, "req")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkConsistent checks that the counters agree with the reservation
// hashes, the users hash and the stream, and that I1 holds.
func checkConsistent(t testing.TB, s *Store, rdb *redis.Client, sale string) (Counters, map[string]*quota.Reservation) {
	t.Helper()
	c := mustCounters(t, s, sale)
	all := allReservations(t, s, rdb, sale)
	var active, confirmed int64
	users := map[string]int64{}
	for _, r := range all {
		switch r.State {
		case quota.Active:
			active++
			users[r.User]++
		case quota.Confirmed:
			confirmed++
			users[r.User]++
		}
	}
	if c.Reserved != active || c.Sold < confirmed || int64(len(all)) != reservationCount(t, rdb, sale) {
		t.Fatalf("counters %+v disagree with %d reservations (%d active, %d confirmed)", c, len(all), active, confirmed)
	}
	if c.Sold+c.Reserved > c.Ceiling() {
		t.Fatalf("I1 broken: sold %d + reserved %d > ceiling %d", c.Sold, c.Reserved, c.Ceiling())
	}
	got, err := rdb.HGetAll(context.Background(), layout.SaleKey(sale, "users")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(users) {
		t.Fatalf("users hash %v, reservations say %v", got, users)
	}
	for u, n := range users {
		if got[u] != strconv.FormatInt(n, 10) {
			t.Fatalf("users[%s] = %q, reservations say %d", u, got[u], n)
		}
	}
	checkStream(t, rdb, sale, s.region, all)
	return c, all
}

type reserveFunc func(ctx context.Context, sale string, r ReserveRequest) (ReserveResult, error)

// buyers runs n concurrent buyers; buyer i is user u<i mod users> with
// its own request id. It returns every answer.
func buyers(t *testing.T, reserve reserveFunc, sale string, n, users int) []ReserveResult {
	t.Helper()
	out := make([]ReserveResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			u := "u" + strconv.Itoa(i%users)
			out[i], errs[i] = reserve(context.Background(), sale, buy(u, fmt.Sprintf("req-%d", i), t0))
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkBuyers(t *testing.T, s *Store, rdb *redis.Client, sale string, res []ReserveResult, ceiling int) {
	t.Helper()
	byUser := map[string]string{}
	count := map[quota.Outcome]int{}
	for _, r := range res {
		count[r.Outcome]++
		switch r.Outcome {
		case quota.Reserved:
			if prev, ok := byUser[r.Reservation.User]; ok {
				t.Fatalf("user %s reserved twice: %s and %s", r.Reservation.User, prev, r.Reservation.ID)
			}
			byUser[r.Reservation.User] = r.Reservation.ID
		case quota.SoldOut, quota.UserLimit:
		default:
			t.Fatalf("unexpected outcome %v", r.Outcome)
		}
	}
	if count[quota.Reserved] != ceiling {
		t.Fatalf("%d reserved, want exactly %d (outcomes %v)", count[quota.Reserved], ceiling, count)
	}
	c, all := checkConsistent(t, s, rdb, sale)
	if c.Reserved != int64(ceiling) || c.Available() != 0 || len(all) != ceiling {
		t.Fatalf("counters %+v, %d reservation hashes; want %d reserved", c, len(all), ceiling)
	}
	for u, id := range byUser {
		if r := all[id]; r == nil || r.User != u || r.State != quota.Active {
			t.Fatalf("answered reservation %s for %s, Redis holds %+v", id, u, r)
		}
	}
}

// TestConcurrentBuyers: 2,000 concurrent buyers (1,500 users, 500 of them
// trying twice) for 100 units get exactly 100 reservations, no user twice.
func TestConcurrentBuyers(t *testing.T) {
	s, _, rdb := newTestStore(t)
	mustGrant(t, s, "hot", 1, 100)
	res := buyers(t, s.Reserve, "hot", 2000, 1500)
	checkBuyers(t, s, rdb, "hot", res, 100)
}

// TestConcurrentBuyersBatched is TestConcurrentBuyers through the Batcher.
func TestConcurrentBuyersBatched(t *testing.T) {
	s, _, rdb := newTestStore(t)
	b := NewBatcher(s, 16, 0)
	defer b.Close()
	var mu sync.Mutex
	calls, largest := 0, 0
	b.onBatch = func(_ string, n int) {
		mu.Lock()
		calls++
		largest = max(largest, n)
		mu.Unlock()
	}
	mustGrant(t, s, "hot", 1, 100)
	res := buyers(t, b.Reserve, "hot", 2000, 1500)
	checkBuyers(t, s, rdb, "hot", res, 100)
	if largest > 16 {
		t.Fatalf("a batch of %d exceeds the maximum 16", largest)
	}
	t.Logf("2000 reserves in %d script calls", calls)
}

// TestRetriesSameRequestID: retries of one request, sequential or
// concurrent, never reserve twice, through the Store and the Batcher.
func TestRetriesSameRequestID(t *testing.T) {
	s, _, rdb := newTestStore(t)
	b := NewBatcher(s, 8, 0)
	defer b.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		reserve reserveFunc
	}{{"store", s.Reserve}, {"batcher", b.Reserve}} {
		t.Run(tc.name, func(t *testing.T) {
			sale := "retry-" + tc.name
			mustGrant(t, s, sale, 1, 10)
			const n = 64
			res := make([]ReserveResult, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					res[i], errs[i] = tc.reserve(ctx, sale, ReserveRequest{User: "ann", RequestID: "once", Now: t0, TTL: time.Minute, PerUserLimit: 5})
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			reserved := 0
			id := res[0].Reservation.ID
			for _, r := range res {
				if r.Outcome == quota.Reserved {
					reserved++
				} else if r.Outcome != quota.Duplicate {
					t.Fatalf("outcome %v, want reserved or duplicate", r.Outcome)
				}
				if r.Reservation.ID != id || r.Reservation.RequestID != "once" {
					t.Fatalf("answer %+v, want reservation %s", r, id)
				}
			}
			if reserved != 1 {
				t.Fatalf("%d retries reserved, want exactly 1", reserved)
			}
			if err := s.Confirm(ctx, sale, id, t0); err != nil {
				t.Fatal(err)
			}
			// A late retry after payment still answers the same, now confirmed, reservation.
			r, err := tc.reserve(ctx, sale, ReserveRequest{User: "ann", RequestID: "once", Now: t0.Add(time.Hour), TTL: time.Minute, PerUserLimit: 5})
			if err != nil || r.Outcome != quota.Duplicate || r.Reservation.State != quota.Confirmed || r.Reservation.ID != id {
				t.Fatalf("late retry: %+v, %v", r, err)
			}
			if c, all := checkConsistent(t, s, rdb, sale); len(all) != 1 || c.Sold != 1 || c.Reserved != 0 {
				t.Fatalf("counters %+v after one confirmed reservation", c)
			}
		})
	}
}

// TestExpirySellsAgain: a reservation not paid in time expires exactly
// once, its unit sells again, and paying it afterwards fails cleanly.
func TestExpirySellsAgain(t *testing.T) {
	s, _, rdb := newTestStore(t)
	ctx := context.Background()
	mustGrant(t, s, "x", 1, 1)
	ann := mustReserve(t, s, "x", buy("ann", "a", t0), quota.Reserved)
	mustReserve(t, s, "x", buy("bob", "b", t0), quota.SoldOut)
	due := time.UnixMilli(ann.ExpiresAt)
	if ids, err := s.Expire(ctx, "x", due.Add(-time.Millisecond), 10); err != nil || len(ids) != 0 {
		t.Fatalf("expire before due: %v, %v", ids, err)
	}
	if ids, err := s.Expire(ctx, "x", due, 10); err != nil || len(ids) != 1 || ids[0] != ann.ID {
		t.Fatalf("expire when due: %v, %v; want [%s]", ids, err, ann.ID)
	}
	if ids, err := s.Expire(ctx, "x", due.Add(time.Hour), 10); err != nil || len(ids) != 0 {
		t.Fatalf("second expire: %v, %v; want nothing", ids, err)
	}
	if err := s.Confirm(ctx, "x", ann.ID, due); !errors.Is(err, quota.ErrNotActive) {
		t.Fatalf("confirm after expiry: %v, want ErrNotActive", err)
	}
	if err := s.Cancel(ctx, "x", ann.ID, due); !errors.Is(err, quota.ErrNotActive) {
		t.Fatalf("cancel after expiry: %v, want ErrNotActive", err)
	}
	bob := mustReserve(t, s, "x", buy("bob", "b2", due), quota.Reserved)
	if bob.ID == "" || bob.ID == ann.ID {
		t.Fatalf("bob got %+v, a new reservation", bob)
	}
	// Ann's slot was freed by expiry, but the one unit is Bob's now.
	mustReserve(t, s, "x", buy("ann", "a2", due), quota.SoldOut)
	if err := s.Confirm(ctx, "x", bob.ID, due); err != nil {
		t.Fatal(err)
	}
	c, all := checkConsistent(t, s, rdb, "x")
	if c.Sold != 1 || c.Reserved != 0 || all[ann.ID].State != quota.Expired {
		t.Fatalf("counters %+v, ann's reservation %+v", c, all[ann.ID])
	}
}

// TestExpireBatchOrder: Expire is bounded and goes in (expiresAt, id) order.
func TestExpireBatchOrder(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := context.Background()
	mustGrant(t, s, "x", 1, 20)
	for i := range 12 {
		// Ids id01..id12; 10, 11, 12 expire first, and tie with each other.
		ttl := 10 * time.Second
		if i >= 9 {
			ttl = 5 * time.Second
		}
		mustReserve(t, s, "x", ReserveRequest{User: fmt.Sprint("u", i), RequestID: fmt.Sprint("r", i), ID: fmt.Sprintf("id%02d", i+1), Now: t0, TTL: ttl, PerUserLimit: 1}, quota.Reserved)
	}
	var got []string
	for {
		ids, err := s.Expire(ctx, "x", t0.Add(time.Minute), 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 5 {
			t.Fatalf("batch of %d over the limit 5", len(ids))
		}
		if len(ids) == 0 {
			break
		}
		got = append(got, ids...)
	}
	want := "id10 id11 id12 id01 id02 id03 id04 id05 id06 id07 id08 id09"
	if strings.Join(got, " ") != want {
		t.Fatalf("expired %v, want %s", got, want)
	}
}

// TestExtend: payment outage extends an active reservation, capped, never
// shortening it; expiry then follows the new time.
func TestExtend(t *testing.T) {
	s, _, rdb := newTestStore(t)
	ctx := context.Background()
	mustGrant(t, s, "x", 1, 5)
	r := mustReserve(t, s, "x", buy("ann", "a", t0), quota.Reserved)
	old := time.UnixMilli(r.ExpiresAt)
	got, err := s.Extend(ctx, "x", r.ID, old.Add(time.Hour), old.Add(time.Minute))
	if err != nil || !got.Equal(old.Add(time.Minute)) {
		t.Fatalf("extend: %v, %v; want capped at %v", got, err, old.Add(time.Minute))
	}
	if got, err = s.Extend(ctx, "x", r.ID, old, old.Add(time.Hour)); err != nil || !got.Equal(old.Add(time.Minute)) {
		t.Fatalf("extend to an earlier time: %v, %v; want unchanged", got, err)
	}
	if ids, _ := s.Expire(ctx, "x", old.Add(time.Second), 10); len(ids) != 0 {
		t.Fatalf("expired %v at the old expiry", ids)
	}
	if ids, _ := s.Expire(ctx, "x", old.Add(time.Minute), 10); len(ids) != 1 {
		t.Fatalf("expired %v at the new expiry, want [%s]", ids, r.ID)
	}
	if _, err := s.Extend(ctx, "x", r.ID, old.Add(time.Hour), old.Add(time.Hour)); !errors.Is(err, quota.ErrNotActive) {
		t.Fatalf("extend expired: %v, want ErrNotActive", err)
	}
	if _, err := s.Extend(ctx, "x", "99", old, old); !errors.Is(err, quota.ErrNoSuchResv) {
		t.Fatalf("extend unknown: %v, want ErrNoSuchResv", err)
	}
	n, err := rdb.XLen(ctx, layout.SaleKey("x", "orders")).Result()
	if err != nil || n != 3 { // reserved, extended, expired
		t.Fatalf("stream length %d, %v; want 3", n, err)
	}
	checkConsistent(t, s, rdb, "x")
}

// TestGrantReleaseFence: a smaller grant never lowers the ceiling, a
// repeated release id releases once, and a stale fence changes nothing.
func TestGrantReleaseFence(t *testing.T) {
	s, _, _ := newTestStore(t)
	ctx := context.Background()
	if seen, err := s.ApplyGrant(ctx, "x", 5, 10); err != nil || seen != 10 {
		t.Fatalf("grant 10: %d, %v", seen, err)
	}
	if seen, err := s.ApplyGrant(ctx, "x", 5, 4); err != nil || seen != 10 {
		t.Fatalf("grant 4 after 10: %d, %v; want granted_seen 10", seen, err)
	}
	if c := mustCounters(t, s, "x"); c.Ceiling() != 10 {
		t.Fatalf("ceiling %d after a smaller grant, want 10", c.Ceiling())
	}
	mustReserve(t, s, "x", buy("ann", "a", t0), quota.Reserved)
	for i := range 3 {
		m, rl, err := s.Release(ctx, "x", 5, 0, "rel-1", 20, 0)
		if err != nil || m != 9 || rl != 9 {
			t.Fatalf("release rel-1 try %d: m %d, released %d, %v; want 9, 9", i, m, rl, err)
		}
	}
	if m, rl, err := s.Release(ctx, "x", 5, 0, "rel-2", 3, 0); err != nil || m != 0 || rl != 9 {
		t.Fatalf("release with nothing free: %d, %d, %v", m, rl, err)
	}
	before := mustCounters(t, s, "x")
	if before.Ceiling() != 1 || before.Available() != 0 {
		t.Fatalf("counters %+v after releasing 9 of 10 with 1 reserved", before)
	}
	stale := []func() error{
		func() error { _, err := s.ApplyGrant(ctx, "x", 4, 100); return err },
		func() error { _, _, err := s.Release(ctx, "x", 4, 0, "rel-3", 1, 0); return err },
		func() error { return s.RaiseFloor(ctx, "x", 4, 50, 50) },
		func() error { return s.SetHalted(ctx, "x", 4, true) },
		func() error { return s.SetSaleView(ctx, "x", 4, SaleView{Total: 1, OthersSold: 1, At: 1}) },
	}
	for i, f := range stale {
		if err := f(); !errors.Is(err, quota.ErrStaleFence) {
			t.Fatalf("stale call %d: %v, want ErrStaleFence", i, err)
		}
		if c := mustCounters(t, s, "x"); c != before {
			t.Fatalf("stale call %d changed the counters: %+v -> %+v", i, before, c)
		}
	}
	// A newer agent takes over; the old one is then refused.
	if _, err := s.ApplyGrant(ctx, "x", 6, 12); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyGrant(ctx, "x", 5, 20); !errors.Is(err, quota.ErrStaleFence) {
		t.Fatalf("old agent after takeover: %v, want ErrStaleFence", err)
	}
	if c := mustCounters(t, s, "x"); c.Fence != 6 || c.GrantedSeen != 12 {
		t.Fatalf("counters %+v, want fence 6, granted 12", c)
	}
	// The sale view: none until written, then what the agent wrote; the
	// deposed agent's write was refused above and is not there.
	if v, err := s.View(ctx, "x"); err != nil || v != (SaleView{}) {
		t.Fatalf("view before any write: %+v, %v", v, err)
	}
	want := SaleView{Total: 100, OthersSold: 30, OthersReserved: 7, At: 1234}
	if err := s.SetSaleView(ctx, "x", 6, want); err != nil {
		t.Fatal(err)
	}
	if v, err := s.View(ctx, "x"); err != nil || v != want {
		t.Fatalf("view %+v, %v; want %+v", v, err, want)
	}
}

// TestCrashKeepsAcknowledged: kill -9 Redis in the middle of a load; after
// it restarts from its AOF every acknowledged reservation is there and the
// counters still agree with the reservations (I1, I4).
func TestCrashKeepsAcknowledged(t *testing.T) {
	t.Run("store", func(t *testing.T) { crashMidLoad(t, false) })
	t.Run("batcher", func(t *testing.T) { crashMidLoad(t, true) })
}

func crashMidLoad(t *testing.T, batched bool) {
	s, srv, rdb := newTestStore(t)
	ctx := context.Background()
	mustGrant(t, s, "x", 1, 100_000)
	reserve := s.Reserve
	if batched {
		b := NewBatcher(s, 16, 0)
		defer b.Close()
		reserve = b.Reserve
	}
	var (
		mu    sync.Mutex
		acked []quota.Reservation
		wg    sync.WaitGroup
	)
	ackc := make(chan struct{}, 10_000)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				u := fmt.Sprintf("w%d-%d", w, i)
				res, err := reserve(ctx, "x", buy(u, u, t0))
				if err != nil {
					return // Redis is gone: the answer is unknown, so nothing was acknowledged
				}
				if res.Outcome != quota.Reserved {
					t.Errorf("reserve %s: %v", u, res.Outcome)
					return
				}
				mu.Lock()
				acked = append(acked, res.Reservation)
				mu.Unlock()
				ackc <- struct{}{}
			}
		})
	}
	for range 300 {
		<-ackc
	}
	srv.Kill()
	wg.Wait()
	srv.Restart()
	// go-redis refuses dials for a while after repeated dial errors (its pool
	// retries in the background about once a second): wait for it, not for time.
	for rdb.Ping(ctx).Err() != nil {
		time.Sleep(20 * time.Millisecond)
	}

	loaded, err := s.ScriptsLoaded(ctx)
	if err != nil || loaded {
		t.Fatalf("scripts loaded after restart: %v, %v; Redis forgets them", loaded, err)
	}
	c, all := checkConsistent(t, s, rdb, "x")
	for _, a := range acked {
		if got := all[a.ID]; got == nil || *got != a {
			t.Fatalf("acknowledged %+v lost or changed: %+v", a, got)
		}
	}
	if c.Reserved < int64(len(acked)) {
		t.Fatalf("reserved %d < %d acknowledged", c.Reserved, len(acked))
	}
	t.Logf("%d acknowledged, %d in Redis after kill -9", len(acked), c.Reserved)
	// Selling goes on after the restart; the script is sent again on NOSCRIPT.
	if res, err := reserve(ctx, "x", buy("after", "after", t0)); err != nil || res.Outcome != quota.Reserved {
		t.Fatalf("reserve after restart: %+v, %v", res, err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if loaded, err := s.ScriptsLoaded(ctx); err != nil || !loaded {
		t.Fatalf("scripts loaded after Load: %v, %v", loaded, err)
	}
}

// TestDurability: the readiness check accepts only appendfsync always.
func TestDurability(t *testing.T) {
	s, _, _ := newTestStore(t)
	if err := s.Durability(context.Background()); err != nil {
		t.Fatalf("appendfsync always: %v", err)
	}
	lax := NewStore(redistest.Start(t, "--appendfsync", "everysec").Client(), "eu")
	if err := lax.Durability(context.Background()); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "everysec") {
		t.Fatalf("appendfsync everysec: %v, want ErrNotDurable naming it", err)
	}
}

// TestBadInput: bad arguments are refused before Redis with a clear error.
func TestBadInput(t *testing.T) {
	s, _, rdb := newTestStore(t)
	ctx := context.Background()
	b := NewBatcher(s, 4, 0)
	defer b.Close()
	ok := buy("ann", "a", t0)
	cases := map[string]func() error{
		"empty sale":      func() error { _, err := s.Reserve(ctx, "", ok); return err },
		"brace in sale":   func() error { _, err := s.Reserve(ctx, "a}b", ok); return err },
		"long sale":       func() error { _, err := s.Reserve(ctx, strings.Repeat("s", MaxKeyPartLen+1), ok); return err },
		"empty user":      func() error { _, err := s.Reserve(ctx, "x", buy("", "a", t0)); return err },
		"empty request":   func() error { _, err := s.Reserve(ctx, "x", buy("ann", "", t0)); return err },
		"zero ttl":        func() error { r := ok; r.TTL = 0; _, err := s.Reserve(ctx, "x", r); return err },
		"zero limit":      func() error { r := ok; r.PerUserLimit = 0; _, err := s.Reserve(ctx, "x", r); return err },
		"zero time":       func() error { r := ok; r.Now = time.Time{}; _, err := s.Reserve(ctx, "x", r); return err },
		"batched bad":     func() error { _, err := b.Reserve(ctx, "x", buy("", "a", t0)); return err },
		"negative limit":  func() error { _, err := s.Expire(ctx, "x", t0, -1); return err },
		"empty resv id":   func() error { return s.Confirm(ctx, "x", "", t0) },
		"empty release":   func() error { _, _, err := s.Release(ctx, "x", 1, 0, "", 1, 0); return err },
		"brace in cancel": func() error { return s.Cancel(ctx, "{x", "1", t0) },
	}
	for name, f := range cases {
		if err := f(); !errors.Is(err, ErrStoreInput) {
			t.Errorf("%s: %v, want ErrStoreInput", name, err)
		}
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("bad input reached Redis: %d keys, %v", n, err)
	}
}

// TestReserveBatchLimits: the largest batch (one HMGET over all its
// requestIds) runs whole, with a user named many times getting exactly
// their limit; a larger or empty batch is refused before Redis.
func TestReserveBatchLimits(t *testing.T) {
	s, _, rdb := newTestStore(t)
	mustGrant(t, s, "x", 1, 1<<20)
	ctx := context.Background()
	rs := make([]ReserveRequest, MaxBatch)
	for i := range rs {
		u := "u" + strconv.Itoa(i%(MaxBatch/2)) // every user twice
		rs[i] = buy(u, "r"+strconv.Itoa(i), t0)
		rs[i].PerUserLimit = 2
	}
	rs[MaxBatch-1] = buy("u0", "r0", t0) // a retry within the batch
	got, errs, err := s.reserveBatch(ctx, "x", rs)
	if err = errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	for i, r := range got[:MaxBatch-1] {
		if r.Outcome != quota.Reserved {
			t.Fatalf("request %d: %v, want reserved", i, r.Outcome)
		}
	}
	if last := got[MaxBatch-1]; last.Outcome != quota.Duplicate || last.Reservation.ID != got[0].Reservation.ID {
		t.Fatalf("retry in the batch: %+v, want the first reservation %s", last, got[0].Reservation.ID)
	}
	if c, _ := checkConsistent(t, s, rdb, "x"); c.Reserved != MaxBatch-1 {
		t.Fatalf("reserved %d, want %d", c.Reserved, MaxBatch-1)
	}
	if n, err := rdb.HGet(ctx, layout.SaleKey("x", "users"), "u0").Int64(); err != nil || n != 2 {
		t.Fatalf("u0 holds %d (%v), want 2", n, err)
	}
	keys := rdb.DBSize(ctx).Val()
	for _, n := range []int{0, MaxBatch + 1} {
		if _, _, err := s.reserveBatch(ctx, "x", make([]ReserveRequest, n)); err == nil {
			t.Fatalf("a batch of %d was accepted", n)
		}
	}
	if after := rdb.DBSize(ctx).Val(); after != keys {
		t.Fatalf("refused batches changed Redis: %d keys, then %d", keys, after)
	}
	if b := NewBatcher(s, MaxBatch+500, 0); b.max != MaxBatch {
		t.Fatalf("NewBatcher kept a batch of %d, want at most %d", b.max, MaxBatch)
	}
}

// TestBatcherCoalesces: calls arriving while a batch is in flight go
// together in the next script call, in arrival order, and answer exactly
// as sequential calls would.
func TestBatcherCoalesces(t *testing.T) {
	s, _, rdb := newTestStore(t)
	mustGrant(t, s, "x", 1, 5)
	b := NewBatcher(s, 32, 0)
	defer b.Close()
	gate := make(chan struct{})
	var sizes []int
	b.onBatch = func(_ string, n int) {
		sizes = append(sizes, n) // only the flusher goroutine calls this
		if len(sizes) == 1 {
			<-gate // hold the first batch in flight
		}
	}
	ctx := context.Background()
	first := make(chan ReserveResult, 1)
	// Each call names its reservation id: the Batcher passes it through.
	go func() {
		req := buy("first", "first", t0)
		req.ID = "id-first"
		r, err := b.Reserve(ctx, "x", req)
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	waitQueued(t, b, "x", 0, 1)
	// Queue ten more, one at a time so the arrival order is known.
	const n = 10
	res := make([]chan ReserveResult, n)
	for i := range n {
		res[i] = make(chan ReserveResult, 1)
		go func() {
			user := fmt.Sprint("u", i%7) // users 0..2 try twice
			req := buy(user, fmt.Sprint("r", i), t0)
			req.ID = fmt.Sprint("id", i)
			r, err := b.Reserve(ctx, "x", req)
			if err != nil {
				t.Error(err)
			}
			res[i] <- r
		}()
		waitQueued(t, b, "x", i+1, 1)
	}
	close(gate)
	if r := <-first; r.Outcome != quota.Reserved || r.Reservation.ID != "id-first" {
		t.Fatalf("first: %+v", r)
	}
	l := quota.NewLedger()
	l.ApplyGrant(1, 5)
	l.Reserve(0, "id-first", "first", "first", t0.UnixMilli(), 10_000, 1)
	for i := range n {
		got := <-res[i]
		want, o, err := l.Reserve(0, fmt.Sprint("id", i), fmt.Sprint("u", i%7), fmt.Sprint("r", i), t0.UnixMilli(), 10_000, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got != (ReserveResult{Outcome: o, Reservation: want}) {
			t.Fatalf("call %d: %+v, sequential answer %v %+v", i, got, o, want)
		}
	}
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != n {
		t.Fatalf("batch sizes %v, want [1 %d]", sizes, n)
	}
	checkConsistent(t, s, rdb, "x")
}

// TestBatcherInFlight: while a batch is in flight, a second one goes at
// once only when a whole batch waits, and never more than maxInFlight at
// a time; every answer is one a serial order of the calls would give.
func TestBatcherInFlight(t *testing.T) {
	s, _, rdb := newTestStore(t)
	mustGrant(t, s, "x", 1, 100)
	const maxBatch, inFlight = 4, 2
	b := NewBatcher(s, maxBatch, inFlight)
	defer b.Close()
	gate := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	held := 0
	b.onBatch = func(_ string, n int) {
		mu.Lock()
		sizes = append(sizes, n)
		hold := len(sizes) <= inFlight // hold the first two batches in flight
		if hold {
			held++
		}
		mu.Unlock()
		if hold {
			<-gate
		}
	}
	heldNow := func() int { mu.Lock(); defer mu.Unlock(); return held }
	ctx := context.Background()
	var wg sync.WaitGroup
	res := make([]ReserveResult, 0, 16)
	var resMu sync.Mutex
	call := func(i int) {
		wg.Go(func() {
			r, err := b.Reserve(ctx, "x", buy(fmt.Sprint("u", i), fmt.Sprint("r", i), t0))
			if err != nil {
				t.Error(err)
			}
			resMu.Lock()
			res = append(res, r)
			resMu.Unlock()
		})
	}
	call(0)
	waitQueued(t, b, "x", 0, 1)
	for heldNow() < 1 {
		time.Sleep(time.Millisecond)
	}
	// Three waiting: less than a batch, so no second flusher.
	for i := 1; i <= 3; i++ {
		call(i)
		waitQueued(t, b, "x", i, 1)
	}
	// The fourth makes a whole batch: a second flusher takes it while the
	// first batch is still held.
	call(4)
	for heldNow() < 2 {
		time.Sleep(time.Millisecond)
	}
	waitQueued(t, b, "x", 0, 2)
	// With both in flight, even a whole waiting batch starts no third.
	for i := 5; i <= 12; i++ {
		call(i)
		waitQueued(t, b, "x", i-4, 2)
	}
	close(gate)
	wg.Wait()
	mu.Lock()
	if len(sizes) < 4 || sizes[0] != 1 || sizes[1] != maxBatch {
		t.Fatalf("batch sizes %v, want [1 %d ...]", sizes, maxBatch)
	}
	mu.Unlock()
	ids := map[string]bool{}
	for _, r := range res {
		if r.Outcome != quota.Reserved || ids[r.Reservation.ID] {
			t.Fatalf("answer %+v: want 13 distinct reservations", r)
		}
		ids[r.Reservation.ID] = true
	}
	if len(ids) != 13 {
		t.Fatalf("%d reservations, want 13", len(ids))
	}
	checkConsistent(t, s, rdb, "x")
}

// waitQueued waits until sale's queue holds n calls and running flushers run.
// It polls state, not time: no assertion depends on speed.
func waitQueued(t *testing.T, b *Batcher, sale string, n, running int) {
	t.Helper()
	for {
		b.mu.Lock()
		q := b.sales[sale]
		done := q != nil && len(q.waiting) == n && q.running == running
		b.mu.Unlock()
		if done {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatcherCancelledCaller: a caller whose context ends while queued gets
// its context error and is left out of the batch; others are unaffected.
func TestBatcherCancelledCaller(t *testing.T) {
	s, _, _ := newTestStore(t)
	mustGrant(t, s, "x", 1, 5)
	b := NewBatcher(s, 32, 0)
	gate := make(chan struct{})
	var sizes []int
	b.onBatch = func(_ string, n int) {
		sizes = append(sizes, n)
		if len(sizes) == 1 {
			<-gate
		}
	}
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { _, err := b.Reserve(ctx, "x", buy("first", "first", t0)); done <- err }()
	waitQueued(t, b, "x", 0, 1)
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error, 1)
	go func() { _, err := b.Reserve(cctx, "x", buy("gone", "gone", t0)); gone <- err }()
	waitQueued(t, b, "x", 1, 1)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	stay := make(chan error, 1)
	go func() { _, err := b.Reserve(ctx, "x", buy("stay", "stay", t0)); stay <- err }()
	waitQueued(t, b, "x", 2, 1)
	close(gate)
	if err := errors.Join(<-done, <-stay); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if len(sizes) != 2 || sizes[1] != 1 {
		t.Fatalf("batch sizes %v, want [1 1]: the cancelled call must be skipped", sizes)
	}
	if _, err := s.Reservation(ctx, "x", "3"); !errors.Is(err, quota.ErrNoSuchResv) {
		t.Fatalf("the cancelled call was reserved: %v", err)
	}
	if _, err := b.Reserve(ctx, "x", buy("late", "late", t0)); !errors.Is(err, ErrBatcherClosed) {
		t.Fatalf("reserve after Close: %v", err)
	}
	var nilB *Batcher
	if err := nilB.Close(); err != nil {
		t.Fatal(err)
	}
}
