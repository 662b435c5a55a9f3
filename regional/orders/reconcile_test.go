package orders_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"flashsale/internal/pgtest"
	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
)

// These tests drive the real Lua scripts (redisstore.Store), so the stream
// format the consumer parses is the one the scripts write.

func open(t *testing.T, dsn string) orders.Store {
	t.Helper()
	s, err := orders.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func sqliteStore(t *testing.T) orders.Store {
	return open(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
}

// sell runs a small sale on the real scripts: 60 reservations, 20
// confirmed, 10 cancelled, 10 expired, 20 still active. It returns the
// active ids.
func sell(t *testing.T, rdb *redis.Client) (*redisstore.Store, []string) {
	t.Helper()
	ctx := context.Background()
	st := redisstore.NewStore(rdb, "eu")
	if err := st.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyGrant(ctx, "s1", 1, 100); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	var ids []string
	for i := range 60 {
		u := "u" + strconv.Itoa(i)
		res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: u, RequestID: "req-" + u, Now: now.Add(time.Duration(i) * time.Millisecond), TTL: time.Minute, PerUserLimit: 1})
		if err != nil || res.Outcome != quota.Reserved {
			t.Fatalf("reserve %s: %+v %v", u, res, err)
		}
		ids = append(ids, res.Reservation.ID)
	}
	for _, id := range ids[:20] {
		if err := st.Confirm(ctx, "s1", id, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids[20:30] {
		if err := st.Cancel(ctx, "s1", id, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	expired, err := st.Expire(ctx, "s1", now.Add(2*time.Minute), 10)
	if err != nil || len(expired) != 10 {
		t.Fatalf("expire: %v %v", expired, err)
	}
	gone := map[string]bool{}
	for _, id := range expired {
		gone[id] = true
	}
	var active []string
	for _, id := range ids[30:] {
		if !gone[id] {
			active = append(active, id)
		}
	}
	// Payment down: the first active reservation is extended (an
	// "extended" event carrying the new expiry).
	if _, err := st.Extend(ctx, "s1", active[0], now.Add(3*time.Minute), now.Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	return st, active
}

func kinds(ds []orders.Diff) map[string]int {
	m := map[string]int{}
	for _, d := range ds {
		m[d.Kind]++
	}
	return m
}

func reconcile(t *testing.T, rdb *redis.Client, s orders.Store, repair bool) orders.Report {
	t.Helper()
	rep, err := orders.Reconcile(context.Background(), rdb, s, orders.ReconcileOptions{Sale: "s1", Region: "eu", Repair: repair})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestReconcileFindsAndRepairsByReplay(t *testing.T) {
	rdb := redistest.Start(t).Client()
	st, active := sell(t, rdb)
	s := sqliteStore(t)
	ctx := context.Background()

	// Nothing drained yet: every reservation is missing in SQL.
	rep := reconcile(t, rdb, s, false)
	if k := kinds(rep.Diffs); k[orders.MissingInSQL] != 60 || k[orders.Counter] == 0 || rep.Reservations != 60 || rep.Rows != 0 {
		t.Fatalf("before any drain: %v, %d reservations, %d rows", k, rep.Reservations, rep.Rows)
	}

	rep = reconcile(t, rdb, s, true)
	if len(rep.Diffs) != 0 || rep.Rows != 60 || len(rep.DiffsBefore) == 0 {
		t.Fatalf("after repair: diffs %v, %d rows, %d diffs before", rep.Diffs, rep.Rows, len(rep.DiffsBefore))
	}
	// 60 reserved + 20 confirmed + 10 cancelled + 10 expired + 1 extended.
	if rep.Replayed != 101 {
		t.Fatalf("replayed %d entries, want 101", rep.Replayed)
	}

	// Redis moves on while SQL does not: five confirms are behind.
	for _, id := range active[:5] {
		if err := st.Confirm(ctx, "s1", id, time.UnixMilli(1_700_000_005_000)); err != nil {
			t.Fatal(err)
		}
	}
	rep = reconcile(t, rdb, s, false)
	if k := kinds(rep.Diffs); k[orders.SQLBehind] != 5 || k[orders.Counter] != 2 || len(rep.Diffs) != 7 {
		t.Fatalf("behind: %v", rep.Diffs)
	}
	if rep = reconcile(t, rdb, s, true); len(rep.Diffs) != 0 {
		t.Fatalf("after second repair: %v", rep.Diffs)
	}

	// A paid order SQL knows and Redis lost: reported, never deleted.
	ghost := orders.Event{StreamID: "1-1", Type: orders.TypeConfirmed, Sale: "s1", Region: "eu", Resv: "999", User: "ghost", At: 1}
	if err := s.Apply(ctx, orders.Batch{Events: []orders.Event{ghost}}); err != nil {
		t.Fatal(err)
	}
	rep = reconcile(t, rdb, s, true)
	if k := kinds(rep.Diffs); k[orders.MissingInRedis] != 1 {
		t.Fatalf("ghost order: %v", rep.Diffs)
	}
	rows, err := s.Orders(ctx, "s1", "eu")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range rows {
		found = found || (o.Resv == "999" && o.State == orders.Confirmed)
	}
	if !found {
		t.Fatal("repair removed or changed the confirmed order Redis does not know")
	}
}

// End to end on the real scripts: the consumer drains what they wrote into
// both stores and reconcile then finds nothing to say.
func TestScriptsToSQLEndToEnd(t *testing.T) {
	for name, dsn := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "orders.db") },
		"postgres": func(t *testing.T) string { return pgtest.Fresh(t) },
	} {
		t.Run(name, func(t *testing.T) {
			rdb := redistest.Start(t).Client()
			st, active := sell(t, rdb)
			s := open(t, dsn(t))
			cfg := orders.DefaultConfig()
			cfg.Redis, cfg.Store, cfg.Consumer = rdb, s, "e2e"
			cfg.Sales = func() []string { return []string{"s1"} }
			cfg.Block, cfg.SalesEvery = 50*time.Millisecond, 50*time.Millisecond
			cfg.Registerer = prometheus.NewRegistry()
			c, err := orders.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			deadline := time.Now().Add(60 * time.Second)
			for {
				n, err := orders.Lag(context.Background(), rdb, layout.StreamKey("s1"), cfg.Group)
				if err == nil && n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not drained: lag %d, %v", n, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			rep := reconcile(t, rdb, s, false)
			if len(rep.Diffs) != 0 || rep.Rows != 60 || rep.Lag != 0 {
				t.Fatalf("after drain: %d rows, lag %d, diffs %v", rep.Rows, rep.Lag, rep.Diffs)
			}
			r, err := st.Reservation(context.Background(), "s1", active[0])
			if err != nil {
				t.Fatal(err)
			}
			rows, err := s.Orders(context.Background(), "s1", "eu")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range rows {
				if o.Resv == active[0] && !o.ExpiresAt.Equal(time.UnixMilli(r.ExpiresAt)) {
					t.Fatalf("extended reservation: SQL expires_at %v, Redis %v", o.ExpiresAt, time.UnixMilli(r.ExpiresAt))
				}
			}
		})
	}
}
