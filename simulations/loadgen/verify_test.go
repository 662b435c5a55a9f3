package loadgen

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/regional/orders"
	"flashsale/regional/orders/orderstest"
	"flashsale/regional/redisstore"
)

// sellSome makes real reservations through the seller's scripts: n users
// reserve, the first confirms, the second cancels.
func sellSome(t *testing.T, rdb *redis.Client, region, sale string, ceiling int64, users []string) {
	t.Helper()
	st, ids := reserveEach(t, rdb, region, sale, ceiling, users)
	if err := st.Confirm(context.Background(), sale, ids[0], testNow); err != nil {
		t.Fatal(err)
	}
	if err := st.Cancel(context.Background(), sale, ids[1], testNow); err != nil {
		t.Fatal(err)
	}
}

// holdAll grants ceiling units to region and has each user reserve one;
// the first user confirms.
func holdAll(t *testing.T, rdb *redis.Client, region, sale string, ceiling int64, users []string) {
	t.Helper()
	st, ids := reserveEach(t, rdb, region, sale, ceiling, users)
	if err := st.Confirm(context.Background(), sale, ids[0], testNow); err != nil {
		t.Fatal(err)
	}
}

var testNow = time.UnixMilli(1_700_000_000_000)

// reserveEach grants ceiling units to region and has each user reserve
// one, through the seller's scripts; it returns the reservation ids.
func reserveEach(t *testing.T, rdb *redis.Client, region, sale string, ceiling int64, users []string) (*redisstore.Store, []string) {
	t.Helper()
	ctx := context.Background()
	st := redisstore.NewStore(rdb, region)
	if _, err := st.ApplyGrant(ctx, sale, 0, ceiling); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range users {
		res, err := st.Reserve(ctx, sale, redisstore.ReserveRequest{User: u, RequestID: "r-" + u, Now: testNow, TTL: time.Minute, PerUserLimit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != quota.Reserved {
			t.Fatalf("reserve %s: %v", u, res.Outcome)
		}
		ids = append(ids, res.Reservation.ID)
	}
	return st, ids
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

// Reservation ids are unique across regions: the real scripts' ULIDs pass,
// an id made in two regions (as per-region counters did) is caught.
func TestVerifyCatchesReservationIDMadeTwice(t *testing.T) {
	eu, us := twoRegions(t)
	ctx := context.Background()
	sellSome(t, eu, "eu", "s1", 5, []string{"a", "b", "c"})
	sellSome(t, us, "us", "s1", 5, []string{"x", "y", "z"})
	regions := []RegionRedis{{"eu", eu}, {"us", us}}
	v, err := Verify(ctx, regions, "s1", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() {
		t.Fatalf("violations on honest regions: %v", v.Violations)
	}
	msgs, err := eu.XRangeN(ctx, "{sale:s1}:orders", "-", "+", 1).Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("eu stream: %v %v", msgs, err)
	}
	// us hands out eu's first id again (and counts it, so only the id check can see it).
	us.HIncrBy(ctx, "{sale:s1}:ledger", "reserved", 1)
	us.HIncrBy(ctx, "{sale:s1}:users", "w", 1)
	us.XAdd(ctx, &redis.XAddArgs{Stream: "{sale:s1}:orders", Values: []any{"type", "reserved", "resv", msgs[0].Values["resv"], "user", "w"}})
	v, err = Verify(ctx, regions, "s1", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Violations) != 1 || !hasViolation(v, "ids: 1 reservation ids made twice") {
		t.Fatalf("violations %v, want the id made twice", v.Violations)
	}
}

// twoRegions gives two regions' Redis: two databases of one server.
func twoRegions(t *testing.T) (eu, us *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	eu = redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 0})
	us = redis.NewClient(&redis.Options{Addr: srv.Addr, DB: 1})
	t.Cleanup(func() { _ = eu.Close(); _ = us.Close() })
	return eu, us
}

func TestVerifySelloutAndStrandedUnits(t *testing.T) {
	eu, us := twoRegions(t)
	ctx := context.Background()
	regions := []RegionRedis{{"eu", eu}, {"us", us}}
	sellout := VerifyOptions{ExpectSellout: true}

	// Sold out: every granted unit held, every unit of the total granted.
	holdAll(t, eu, "eu", "full", 3, []string{"a", "b", "c"})
	holdAll(t, us, "us", "full", 2, []string{"x", "y"})
	v, err := VerifyWith(ctx, regions, "full", 5, 1, sellout)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Held != 5 || v.Sold != 2 || v.Stranded != 0 || v.Ungranted != 0 {
		t.Fatalf("sold-out sale: verdict %+v", v)
	}

	// us was granted 5 and sold 2: 3 units stranded there.
	holdAll(t, eu, "eu", "left", 3, []string{"a", "b", "c"})
	holdAll(t, us, "us", "left", 5, []string{"x", "y"})
	v, err = VerifyWith(ctx, regions, "left", 8, 1, sellout)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(v, "sellout: held 5 (sold 2 + reserved 3) of total 8, 3 unsold: eu held 3 stranded 0, us held 2 stranded 3; ungranted 0") || len(v.Violations) != 1 {
		t.Errorf("violations %q", v.Violations)
	}
	v, err = Verify(ctx, regions, "left", 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Held != 5 || v.Stranded != 3 || v.Regions[1].Stranded != 3 || v.Regions[0].Stranded != 0 || v.Ungranted != 0 {
		t.Errorf("without the sellout check: verdict %+v", v)
	}
	// A total above the grants: the rest is in no region's quota.
	v, err = VerifyWith(ctx, regions, "left", 10, 1, sellout)
	if err != nil {
		t.Fatal(err)
	}
	if v.Ungranted != 2 || !hasViolation(v, "sellout: held 5 (sold 2 + reserved 3) of total 10, 5 unsold") {
		t.Errorf("ungranted %d, violations %q", v.Ungranted, v.Violations)
	}
}

// apply writes events as the order consumer would: each "type:resv:user".
func apply(t *testing.T, s orders.Store, region string, evs ...string) {
	t.Helper()
	var b orders.Batch
	for _, e := range evs {
		parts := strings.Split(e, ":")
		b.Events = append(b.Events, orders.Event{
			StreamID: "0-" + parts[1] + "-" + parts[0], Type: parts[0], Sale: "s1", Region: region,
			Resv: parts[1], User: parts[2], Req: "r-" + parts[2], At: 1_700_000_000_000, ExpiresAt: 1_700_000_060_000,
		})
	}
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyOrderStores(t *testing.T) {
	eu, us := twoRegions(t)
	ctx := context.Background()
	regions := []RegionRedis{{"eu", eu}, {"us", us}}
	sellSome(t, eu, "eu", "s1", 5, []string{"a", "b", "c", "d"}) // a sold, b cancelled, c d reserved
	holdAll(t, us, "us", "s1", 5, []string{"x"})                 // x sold
	euDB, usDB := orderstest.SQLite(t), orderstest.SQLite(t)
	// The streams drained but for d's reservation (lag is fine).
	apply(t, euDB, "eu", "reserved:1:a", "confirmed:1:a", "reserved:2:b", "cancelled:2:b", "reserved:3:c")
	apply(t, usDB, "us", "reserved:1:x", "confirmed:1:x")
	// The eu store given twice, once as a store of every region: its
	// rows must count once.
	opts := VerifyOptions{Orders: []OrderStore{{"eu", euDB}, {"", euDB}, {"us", usDB}}}
	v, err := VerifyWith(ctx, regions, "s1", 10, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []OrderCounts{{Region: "eu", Rows: 3, Live: 2, Confirmed: 1}, {Region: "us", Rows: 1, Live: 1, Confirmed: 1}}
	if !v.OK() || !slices.Equal(v.Orders, want) {
		t.Fatalf("clean sale: violations %q, orders %+v, want %+v", v.Violations, v.Orders, want)
	}

	// c also holds a unit in us's SQL: above the limit only there.
	apply(t, usDB, "us", "reserved:2:c")
	v, err = VerifyWith(ctx, regions, "s1", 10, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(v, "I3: 1 users above the limit 1 in the order stores: [c=2]") || len(v.Violations) != 1 {
		t.Errorf("violations %q", v.Violations)
	}

	// SQL confirms an order eu's ledger never sold.
	apply(t, euDB, "eu", "reserved:9:e", "confirmed:9:e")
	v, err = VerifyWith(ctx, regions, "s1", 10, 1, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(v, "orders vs ledger: region eu has 2 confirmed orders in SQL, its ledger sold 1") || hasViolation(v, "orders vs ledger: region us") {
		t.Errorf("violations %q", v.Violations)
	}
}

// TestVerifySoldOutAnswers: a 410 sold_out answered in a run whose sale
// ends with units unsold (here 1 reserved and 2 stranded of 5 are not
// sold) is an L1 violation; with every unit sold, or with no such answer,
// it is not.
func TestVerifySoldOutAnswers(t *testing.T) {
	eu, us := twoRegions(t)
	ctx := context.Background()
	regions := []RegionRedis{{"eu", eu}, {"us", us}}
	holdAll(t, eu, "eu", "s", 2, []string{"a", "b"}) // sold 1, reserved 1
	holdAll(t, us, "us", "s", 3, []string{"x"})      // sold 1, 2 stranded
	told := VerifyOptions{SoldOutAnswers: 7}
	v, err := VerifyWith(ctx, regions, "s", 5, 1, told)
	if err != nil {
		t.Fatal(err)
	}
	if !hasViolation(v, "L1: 7 answers were 410 sold_out but the sale ended with sold 2 (+ reserved 1) of total 5") || len(v.Violations) != 1 {
		t.Errorf("violations %q", v.Violations)
	}
	if v, err = VerifyWith(ctx, regions, "s", 5, 1, VerifyOptions{}); err != nil || !v.OK() {
		t.Errorf("no sold_out answer: %v %q", err, v.Violations)
	}
	// Every unit sold: the answers were right.
	holdAll(t, eu, "eu", "one", 1, []string{"a"})
	if v, err = VerifyWith(ctx, regions[:1], "one", 1, 1, told); err != nil || !v.OK() {
		t.Errorf("sold out for real: %v %q", err, v.Violations)
	}
}
