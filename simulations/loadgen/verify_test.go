package loadgen

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/regional"
)

// sellSome makes real reservations through the seller's scripts: n users
// reserve, the first confirms, the second cancels.
func sellSome(t *testing.T, rdb *redis.Client, region, sale string, ceiling int64, users []string) {
	t.Helper()
	ctx := context.Background()
	st := regional.NewStore(rdb, region)
	if _, err := st.ApplyGrant(ctx, sale, 0, ceiling); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	var ids []string
	for _, u := range users {
		res, err := st.Reserve(ctx, sale, regional.ReserveRequest{User: u, RequestID: "r-" + u, Now: now, TTL: time.Minute, PerUserLimit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != quota.Reserved {
			t.Fatalf("reserve %s: %v", u, res.Outcome)
		}
		ids = append(ids, res.Reservation.ID)
	}
	if err := st.Confirm(ctx, sale, ids[0], now); err != nil {
		t.Fatal(err)
	}
	if err := st.Cancel(ctx, sale, ids[1], now); err != nil {
		t.Fatal(err)
	}
}

func hasViolation(v Verdict, prefix string) bool {
	for _, s := range v.Violations {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestVerifyPassesHonestSale(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	sellSome(t, rdb, "eu", "s1", 5, []string{"a", "b", "c", "d"})
	v, err := Verify(context.Background(), []RegionRedis{{"eu", rdb}}, "s1", 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() {
		t.Fatalf("violations on an honest sale: %v", v.Violations)
	}
	// a confirmed, b cancelled, c and d active.
	if v.Sold != 1 || v.Reserved != 2 || v.MaxPerUser != 1 || v.Regions[0].StreamHeld != 3 {
		t.Fatalf("verdict %+v", v)
	}
}

// The negative controls: write into Redis what a broken seller would, and
// the verifier must say so.
func TestVerifyCatchesInjectedOversell(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	sellSome(t, rdb, "eu", "s1", 3, []string{"a", "b", "c"})
	// The sale is full (a sold, c reserved, one unit left): a buggy script
	// hands two more units out, one to a user who already holds one.
	rdb.HIncrBy(ctx, "{sale:s1}:ledger", "reserved", 2)
	rdb.HIncrBy(ctx, "{sale:s1}:users", "a", 1)
	rdb.HIncrBy(ctx, "{sale:s1}:users", "e", 1)
	for _, u := range []string{"a", "e"} {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "{sale:s1}:orders", Values: []any{"type", "reserved", "user", u}})
	}
	v, err := Verify(ctx, []RegionRedis{{"eu", rdb}}, "s1", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"I1: region eu", "I1 oversell", "I3: 1 users above the limit 1 in the users hashes", "I3: 1 users above the limit 1 in the order streams"} {
		if !hasViolation(v, want) {
			t.Errorf("missing violation %q in %v", want, v.Violations)
		}
	}
	if hasViolation(v, "ledger vs stream") {
		t.Errorf("ledger and stream were changed alike, yet: %v", v.Violations)
	}
}

func TestVerifyCatchesLedgerStreamMismatch(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	sellSome(t, rdb, "eu", "s1", 5, []string{"a", "b"})
	// A reservation the ledger counts but no order event records: a lost
	// order (I4) the ceiling alone would never reveal.
	rdb.HIncrBy(ctx, "{sale:s1}:ledger", "reserved", 1)
	v, err := Verify(ctx, []RegionRedis{{"eu", rdb}}, "s1", 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(v, "ledger vs stream") || hasViolation(v, "I1") {
		t.Fatalf("violations %v", v.Violations)
	}
}

// Each region within its own ceiling, the sum above the total: only the
// cross-region check sees it; and a user who bought in two regions.
func TestVerifyCatchesCrossRegionOversell(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	eu := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 0})
	us := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 1})
	t.Cleanup(func() { _ = eu.Close(); _ = us.Close() })
	sellSome(t, eu, "eu", "s1", 3, []string{"a", "b", "c"})
	sellSome(t, us, "us", "s1", 3, []string{"a", "x", "y"})
	regions := []RegionRedis{{"eu", eu}, {"us", us}}
	// Each region holds 2 (one sold, one reserved): 4 in all.
	v, err := Verify(ctx, regions, "s1", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if hasViolation(v, "I1: region") {
		t.Errorf("a region is within its ceiling: %v", v.Violations)
	}
	if !hasViolation(v, "I1 oversell") || !hasViolation(v, "I3: 1 users") {
		t.Errorf("violations %v", v.Violations)
	}
	if v.Sold+v.Reserved != 4 {
		t.Errorf("sold %d reserved %d", v.Sold, v.Reserved)
	}
	// With the total the grants allow, the same data is honest but for user a.
	v, err = Verify(ctx, regions, "s1", 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if hasViolation(v, "I1") || !hasViolation(v, "I3") {
		t.Errorf("violations %v", v.Violations)
	}
}
