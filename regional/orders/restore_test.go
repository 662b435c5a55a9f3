package orders_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/pgtest"
	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
)

// TestRestoreAfterLostWrites: a sale sold on the real scripts and drained
// into SQL; then Redis loses everything (FLUSHALL, or kill -9 of a Redis
// running without AOF). Restore rebuilds the region from the SQL order
// store: a buyer holding a unit cannot buy another, a retry of a known
// requestId answers its reservation, confirming a live reservation works,
// restored ids stay taken, and Redis and SQL agree again. A confirm made
// after the last drain was seen by no surviving witness: it comes back
// active (the window DESIGN §4.5 counts as at risk), never lost.
func TestRestoreAfterLostWrites(t *testing.T) {
	losses := map[string]struct {
		args []string
		lose func(t *testing.T, srv *redistest.Server, rdb *redis.Client)
	}{
		"flushall": {nil, func(t *testing.T, _ *redistest.Server, rdb *redis.Client) {
			if err := rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		"restart without AOF": {[]string{"--appendonly", "no"}, func(t *testing.T, srv *redistest.Server, _ *redis.Client) {
			srv.Restart()
		}},
	}
	dsns := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "orders.db") },
		"postgres": func(t *testing.T) string { return pgtest.Fresh(t) },
	}
	for lname, loss := range losses {
		for dname, dsn := range dsns {
			t.Run(lname+"/"+dname, func(t *testing.T) {
				srv := redistest.Start(t, loss.args...)
				rdb := srv.Client()
				testRestore(t, srv, rdb, open(t, dsn(t)), func() { loss.lose(t, srv, rdb) })
			})
		}
	}
}

func testRestore(t *testing.T, srv *redistest.Server, rdb *redis.Client, sql orders.Store, lose func()) {
	ctx := context.Background()
	st, active := sell(t, rdb)
	before := map[string]quota.Reservation{}
	for i := range 60 {
		r, err := st.RequestReservation(ctx, "s1", reqOf(i))
		if err != nil {
			t.Fatal(err)
		}
		before[r.ID] = r
	}
	if _, err := orders.Replay(ctx, rdb, sql, "s1"); err != nil {
		t.Fatal(err)
	}
	// Paid after the last drain: only Redis knew it.
	if err := st.Confirm(ctx, "s1", active[1], time.UnixMilli(1_700_000_003_000)); err != nil {
		t.Fatal(err)
	}

	lose()
	if c, err := st.Counters(ctx, "s1"); err != nil || c.Reserved != 0 || c.Sold != 0 {
		t.Fatalf("after the loss: %+v %v, want an empty ledger", c, err)
	}
	if _, err := orders.Restore(ctx, st, sql, "s1", 1); !errors.Is(err, orders.ErrNotHalted) {
		t.Fatalf("restore of a sale that is not halted: %v, want ErrNotHalted", err)
	}
	if err := st.SetHalted(ctx, "s1", 1, true); err != nil {
		t.Fatal(err)
	}
	res, err := orders.Restore(ctx, st, sql, "s1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != 60 || res.FromSQL != 60 || len(res.Conflicts) != 0 || res.Counts.Sold != 20 || res.Counts.Reserved != 20 || res.Counts.Users != 40 {
		t.Fatalf("restore: %+v", res)
	}
	for id, want := range before {
		got, err := st.Reservation(ctx, "s1", id)
		if err != nil || got.User != want.User || got.RequestID != want.RequestID || got.ExpiresAt != want.ExpiresAt || got.State != want.State {
			t.Fatalf("reservation %s: restored %+v %v, was %+v", id, got, err, want)
		}
	}
	// The agent's part: grants back from etcd, then selling resumes.
	if _, err := st.ApplyGrant(ctx, "s1", 1, 100); err != nil {
		t.Fatal(err)
	}
	if err := st.SetHalted(ctx, "s1", 1, false); err != nil {
		t.Fatal(err)
	}

	now := time.UnixMilli(1_700_000_010_000)
	holder := before[active[0]]
	if res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: holder.User, RequestID: "again", Now: now, TTL: time.Minute, PerUserLimit: 1}); err != nil || res.Outcome != quota.UserLimit {
		t.Fatalf("a holder buying twice: %+v %v, want user_limit", res, err)
	}
	if res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: holder.User, RequestID: holder.RequestID, Now: now, TTL: time.Minute, PerUserLimit: 1}); err != nil ||
		res.Outcome != quota.Duplicate || res.Reservation.ID != active[0] {
		t.Fatalf("a retry of a restored requestId: %+v %v, want its reservation %s", res, err, active[0])
	}
	if res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: "u0", RequestID: "u0-again", Now: now, TTL: time.Minute, PerUserLimit: 1}); err != nil || res.Outcome != quota.UserLimit {
		t.Fatalf("a buyer who paid buying twice: %+v %v, want user_limit", res, err)
	}
	if err := st.Confirm(ctx, "s1", active[0], now); err != nil {
		t.Fatalf("confirm a restored live reservation: %v", err)
	}
	if r, err := st.Reservation(ctx, "s1", active[1]); err != nil || r.State != quota.Active {
		t.Fatalf("the confirm no witness saw: %+v %v, want the reservation back active (to be paid again, idempotently)", r, err)
	}
	for id := range before {
		_, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: "newcomer", RequestID: "n1", ID: id, Now: now, TTL: time.Minute, PerUserLimit: 1})
		if !errors.Is(err, quota.ErrResvExists) {
			t.Fatalf("a new reservation under restored id %s: %v, want ErrResvExists", id, err)
		}
		break
	}
	fresh, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: "u20", RequestID: "u20-again", Now: now, TTL: time.Minute, PerUserLimit: 1})
	if err != nil || fresh.Outcome != quota.Reserved {
		t.Fatalf("a buyer whose reservation was cancelled buys again: %+v %v", fresh, err)
	}
	if _, reused := before[fresh.Reservation.ID]; reused {
		t.Fatalf("new reservation reused id %s", fresh.Reservation.ID)
	}
	if c, err := st.Counters(ctx, "s1"); err != nil || c.Sold != 21 || c.Reserved != 20 {
		t.Fatalf("counters: %+v %v, want sold 21 reserved 20", c, err)
	}

	// Idempotent, and Redis and SQL agree once the stream is drained.
	if err := st.SetHalted(ctx, "s1", 1, true); err != nil {
		t.Fatal(err)
	}
	again, err := orders.Restore(ctx, st, sql, "s1", 1)
	if err != nil || again.Created != 0 || again.Advanced != 0 || len(again.Conflicts) != 0 || again.Counts.Sold != 21 || again.Counts.Reserved != 20 {
		t.Fatalf("second restore: %+v %v, want nothing to do", again, err)
	}
	rep, err := orders.Reconcile(ctx, rdb, sql, orders.ReconcileOptions{Sale: "s1", Region: "eu", Repair: true})
	if err != nil || len(rep.Diffs) != 0 || rep.Rows != 61 {
		t.Fatalf("reconcile after restore: %d rows, %v %v", rep.Rows, rep.Diffs, err)
	}
}

func reqOf(i int) string { return "req-u" + strconv.Itoa(i) }

// A deposed agent's restore writes nothing (DESIGN I5): restore.lua and
// recount.lua carry the agent's fence and refuse an older one; the
// successor's restore goes through.
func TestRestoreRefusesAnOlderFence(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client()
	sql := sqliteStore(t)
	st, active := sell(t, rdb)
	if _, err := orders.Replay(ctx, rdb, sql, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.SetHalted(ctx, "s1", 2, true); err != nil { // the successor, fence 2, halted the sale
		t.Fatal(err)
	}
	if _, err := orders.Restore(ctx, st, sql, "s1", 1); !errors.Is(err, quota.ErrStaleFence) {
		t.Fatalf("restore under the deposed agent's fence: %v, want ErrStaleFence", err)
	}
	if _, err := st.Reservation(ctx, "s1", active[0]); err == nil {
		t.Fatal("the refused restore wrote a reservation")
	}
	if _, err := st.Recount(ctx, "s1", 1); !errors.Is(err, quota.ErrStaleFence) {
		t.Fatalf("recount under the deposed agent's fence: %v, want ErrStaleFence", err)
	}
	res, err := orders.Restore(ctx, st, sql, "s1", 2)
	if err != nil || res.Created != 60 || res.Counts.Reserved != int64(len(active)) {
		t.Fatalf("restore under the successor's fence: %+v %v", res, err)
	}
}
