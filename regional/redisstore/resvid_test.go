package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"

	"flashsale/quota"
)

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
