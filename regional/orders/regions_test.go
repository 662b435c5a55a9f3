package orders_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/orders"
	"flashsale/regional/orders/orderstest"
	"flashsale/regional/redisstore"
)

// TestTwoRegionsIntoOneStore: the order streams of two regions (each its
// own Redis, the real scripts, the same requestIds in both) drain into one
// SQL table; every reservation is there exactly once, under its own
// region, and each region reconciles clean against the shared table.
//
// Rows are keyed by (sale, region, resv): ULIDs alone never collide, and
// the region in the key also keeps apart numeric ids written before
// reservation ids were ULIDs ("1" in us and "1" in eu), so merging needs
// no migration.
func TestTwoRegionsIntoOneStore(t *testing.T) {
	ctx := context.Background()
	const sale, n = "s1", 40
	store := orderstest.SQLite(t)
	now := time.UnixMilli(1_700_000_000_000)
	want := map[string]string{} // reservation id -> region
	rdbs := map[string]*redis.Client{}
	for _, region := range []string{"us", "eu"} {
		rdb := redistest.Start(t).Client()
		rdbs[region] = rdb
		st := redisstore.NewStore(rdb, region)
		if _, err := st.ApplyGrant(ctx, sale, 1, n); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			// Users differ by region (each buys at home); requestIds do not.
			u := region + "-u" + strconv.Itoa(i)
			res, err := st.Reserve(ctx, sale, redisstore.ReserveRequest{User: u, RequestID: "req-" + strconv.Itoa(i), Now: now, TTL: time.Minute, PerUserLimit: 1})
			if err != nil || res.Outcome != quota.Reserved {
				t.Fatalf("%s reserve %s: %+v %v", region, u, res, err)
			}
			id := res.Reservation.ID
			if other, ok := want[id]; ok {
				t.Fatalf("id %s given by %s and %s", id, other, region)
			}
			want[id] = region
			switch i % 4 {
			case 0:
				err = st.Confirm(ctx, sale, id, now.Add(time.Second))
			case 1:
				err = st.Cancel(ctx, sale, id, now.Add(time.Second))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		cfg := orders.DefaultConfig()
		cfg.Redis, cfg.Store, cfg.Consumer = rdb, store, "c-"+region
		cfg.Sales = func() []string { return []string{sale} }
		cfg.Block, cfg.SalesEvery = 50*time.Millisecond, 50*time.Millisecond
		cfg.Registerer = prometheus.NewRegistry()
		c, err := orders.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, rdb := range rdbs {
		for {
			lag, err := orders.Lag(ctx, rdb, layout.StreamKey(sale), orders.DefaultConfig().Group)
			if err == nil && lag == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not drained: lag %d, %v", lag, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	rows, err := store.Orders(ctx, sale, "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, o := range rows {
		seen[o.Resv]++
		if want[o.Resv] != o.Region {
			t.Errorf("row %s of region %q, want %q", o.Resv, o.Region, want[o.Resv])
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("reservation %s (%s) has %d rows, want 1", id, want[id], seen[id])
		}
	}
	if len(rows) != 2*n {
		t.Fatalf("%d rows, want %d", len(rows), 2*n)
	}
	for region, rdb := range rdbs {
		rep, err := orders.Reconcile(ctx, rdb, store, orders.ReconcileOptions{Sale: sale, Region: region})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Diffs) != 0 || rep.Rows != n || rep.Reservations != n {
			t.Fatalf("%s: %d rows, %d reservations, diffs %v", region, rep.Rows, rep.Reservations, rep.Diffs)
		}
	}

	// Numeric ids from before ULIDs: the same id in two regions is two rows.
	legacy := []orders.Event{
		{Type: orders.TypeReserved, Sale: "old", Region: "us", Resv: "1", User: "x", Req: "r", At: 1, ExpiresAt: 100},
		{Type: orders.TypeReserved, Sale: "old", Region: "eu", Resv: "1", User: "y", Req: "r", At: 1, ExpiresAt: 100},
	}
	if err := store.Apply(ctx, orders.Batch{Events: legacy}); err != nil {
		t.Fatal(err)
	}
	if old, err := store.Orders(ctx, "old", ""); err != nil || len(old) != 2 {
		t.Fatalf("legacy rows: %+v %v, want one per region", old, err)
	}
}
