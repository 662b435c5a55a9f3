package regional

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"flashsale/quota"
)

// TestReservationIDsAcrossRegions: two regions, each its own seller and
// Redis, hand out ULIDs that never collide (even for the same requestId);
// an id reserved in one region is unknown in the other (404
// unknown_reservation, nothing changed), while a user of the other home
// region is still redirected home (307) before any lookup.
func TestReservationIDsAcrossRegions(t *testing.T) {
	eu := newEnv(t, nil) // region eu, knows us
	us := newEnv(t, func(c *Config) {
		c.Region = "us"
		c.Regions = map[string]string{"eu": "https://eu.shop.example"}
	})
	tok := func(e *testEnv, user, home string) string {
		return token(t, testSecret, user, home, e.clock.Now().Add(time.Hour))
	}
	buy := func(e *testEnv, user, home, req string) ReservationJSON {
		t.Helper()
		a := e.do("POST", "/v1/flash-sale/buy", tok(e, user, home), map[string]string{"itemId": testSale, "requestId": req})
		expect(t, a, http.StatusCreated, "")
		r := a.resv(t)
		if _, err := ulid.ParseStrict(r.ReservationID); err != nil {
			t.Fatalf("reservation id %q is not a ULID: %v", r.ReservationID, err)
		}
		return r
	}
	// The same requestId in both regions: two reservations, two ids.
	a := buy(eu, "alice", "eu", "req-1")
	b := buy(us, "bob", "us", "req-1")
	if a.ReservationID == b.ReservationID {
		t.Fatalf("two regions gave the same reservation id %s", a.ReservationID)
	}

	finish := func(e *testEnv, op, user, home, id string) answer {
		return e.do("POST", "/v1/flash-sale/reservations/"+id+"/"+op, tok(e, user, home), map[string]string{"itemId": testSale})
	}
	before, keys := us.counters(), us.dbsize()
	for _, op := range []string{"confirm", "cancel"} {
		// A buyer of us holding eu's id (a forged or misrouted link): unknown here.
		expect(t, finish(us, op, "bob", "us", a.ReservationID), http.StatusNotFound, CodeUnknownResv)
		// Its owner, whose home is eu, is sent home before any lookup.
		r := finish(us, op, "alice", "eu", a.ReservationID)
		expect(t, r, http.StatusTemporaryRedirect, CodeWrongRegion)
		if want := "https://eu.shop.example/v1/flash-sale/reservations/" + a.ReservationID + "/" + op; r.header.Get("Location") != want {
			t.Fatalf("Location %q, want %q", r.header.Get("Location"), want)
		}
	}
	if us.counters() != before || us.dbsize() != keys {
		t.Fatal("a confirm or cancel with another region's id changed Redis")
	}
	if _, err := us.srv.Store().Reservation(context.Background(), testSale, a.ReservationID); !errors.Is(err, quota.ErrNoSuchResv) {
		t.Fatalf("eu's reservation read in us: %v, want ErrNoSuchResv", err)
	}
	// At home the same id works.
	expect(t, finish(eu, "confirm", "alice", "eu", a.ReservationID), http.StatusOK, "")
	expect(t, finish(us, "cancel", "bob", "us", b.ReservationID), http.StatusOK, "")
}

// TestReservationIDsNeverCollide: many concurrent reservations through the
// Batcher of two regions' stores, in the same milliseconds, with the same
// users and requestIds in both: every id is a distinct ULID.
func TestReservationIDsNeverCollide(t *testing.T) {
	ctx := context.Background()
	const n = 300
	seen := map[string]string{}
	var mu sync.Mutex
	for _, region := range []string{"eu", "us"} {
		s, _, _ := newTestStore(t)
		s.region = region
		mustGrant(t, s, "x", 1, n)
		b := NewBatcher(s, 16, 0)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				u := fmt.Sprint("u", i)
				r, err := b.Reserve(ctx, "x", buy(u, u, t0))
				if err == nil && r.Outcome != quota.Reserved {
					err = fmt.Errorf("%s: %v", u, r.Outcome)
				}
				if err != nil {
					errs[i] = err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, ok := seen[r.Reservation.ID]; ok {
					errs[i] = fmt.Errorf("id %s given twice: %s and %s/%s", r.Reservation.ID, other, region, u)
				}
				seen[r.Reservation.ID] = region + "/" + u
			})
		}
		wg.Wait()
		_ = b.Close()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 2*n {
		t.Fatalf("%d distinct ids, want %d", len(seen), 2*n)
	}
	for id := range seen {
		u, err := ulid.ParseStrict(id)
		if err != nil || u.Time() != uint64(t0.UnixMilli()) {
			t.Fatalf("id %q: %v, time %d, want a ULID of %d", id, err, u.Time(), t0.UnixMilli())
		}
	}
}

// TestReserveRefusesIDInUse: a reserve naming an id in use is refused with
// quota.ErrResvExists and changes nothing; alone or in a batch, where only
// that request is refused.
func TestReserveRefusesIDInUse(t *testing.T) {
	s, _, rdb := newTestStore(t)
	ctx := context.Background()
	mustGrant(t, s, "x", 1, 10)
	r := buy("ann", "a1", t0)
	r.ID = "01J000000000000000000000AA"
	first := mustReserve(t, s, "x", r, quota.Reserved)
	if first.ID != r.ID {
		t.Fatalf("reserved under %q, want the given id %q", first.ID, r.ID)
	}
	keys := rdb.DBSize(ctx).Val()
	c0 := mustCounters(t, s, "x")
	again := buy("bob", "b1", t0)
	again.ID = r.ID
	if _, err := s.Reserve(ctx, "x", again); !errors.Is(err, quota.ErrResvExists) {
		t.Fatalf("reserve under an id in use: %v, want ErrResvExists", err)
	}
	b := NewBatcher(s, 8, 0)
	defer b.Close()
	if _, err := b.Reserve(ctx, "x", again); !errors.Is(err, quota.ErrResvExists) {
		t.Fatalf("batched reserve under an id in use: %v, want ErrResvExists", err)
	}
	if got, err := s.Reservation(ctx, "x", r.ID); err != nil || got != first {
		t.Fatalf("reservation after the refusals: %+v %v, want %+v", got, err, first)
	}
	if c := mustCounters(t, s, "x"); c != c0 || rdb.DBSize(ctx).Val() != keys {
		t.Fatalf("a refused reserve changed Redis: %+v -> %+v", c0, c)
	}
	// In a batch only the request naming the id in use is refused.
	ok := buy("cat", "c1", t0)
	res, errs, err := s.reserveBatch(ctx, "x", []ReserveRequest{again, ok})
	if err != nil || !errors.Is(errs[0], quota.ErrResvExists) || errs[1] != nil || res[1].Outcome != quota.Reserved {
		t.Fatalf("batch: %+v %v %v, want the first refused and the second reserved", res, errs, err)
	}
	checkConsistent(t, s, rdb, "x")
	// A bad id is refused before Redis.
	bad := buy("dan", "d1", t0)
	bad.ID = "a{b"
	if _, err := s.Reserve(ctx, "x", bad); !errors.Is(err, ErrStoreInput) {
		t.Fatalf("id with a brace: %v, want ErrStoreInput", err)
	}
}
