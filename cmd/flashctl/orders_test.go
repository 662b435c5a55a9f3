package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flashsale/internal/pgtest"
	"flashsale/internal/redistest"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
)

// TestOrdersReconcile runs the real `flashctl orders reconcile` against a
// real Redis (with the seller's scripts) and a SQLite or PostgreSQL order
// store: a reservation the consumer never wrote is found, the exit status
// says so, and --repair fixes it.
func TestOrdersReconcile(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testReconcile(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
	})
	t.Run("postgres", func(t *testing.T) { testReconcile(t, pgtest.Start(t).DSN) })
}

func testReconcile(t *testing.T, dsn string) {
	ctx := context.Background()
	rs := redistest.Start(t)
	rdb := rs.Client()
	st := redisstore.NewStore(rdb, "eu")
	if err := st.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyGrant(ctx, "phone", 0, 10); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	reserve := func(user string) string {
		t.Helper()
		res, err := st.Reserve(ctx, "phone", redisstore.ReserveRequest{User: user, RequestID: "req-" + user, Now: now, TTL: time.Minute, PerUserLimit: 1})
		if err != nil {
			t.Fatal(err)
		}
		return res.Reservation.ID
	}
	a := reserve("alice")
	if err := st.Confirm(ctx, "phone", a, now); err != nil {
		t.Fatal(err)
	}
	reserve("bob")

	store, err := orders.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// What a consumer drained so far; carol's reservation comes after.
	if _, err := orders.Replay(ctx, rdb, store, "phone"); err != nil {
		t.Fatal(err)
	}
	c := reserve("carol")

	args := []string{"orders", "reconcile", "phone", "--region", "eu", "--redis", rs.Addr, "--dsn", dsn}
	out, err := ctl(t, args...)
	if err == nil || !strings.Contains(err.Error(), "--repair") {
		t.Fatalf("with a missing row: err = %v, want one suggesting --repair\n%s", err, out)
	}
	if !strings.Contains(out, orders.MissingInSQL+"  "+c) {
		t.Fatalf("table does not list carol's reservation %s as missing:\n%s", c, out)
	}

	out, err = ctl(t, append(args, "-o", "json")...)
	var v reconcileView
	if jerr := json.Unmarshal([]byte(out), &v); jerr != nil || err == nil {
		t.Fatalf("json: %v / exit %v\n%s", jerr, err, out)
	}
	if v.Reservations != 3 || v.Rows != 2 || !hasDiff(v.Differences, orders.MissingInSQL, c) {
		t.Fatalf("json report %+v: want 3 reservations, 2 rows, %s missing", v, c)
	}

	out, err = ctl(t, append(args, "--repair")...)
	if err != nil {
		t.Fatalf("--repair: %v\n%s", err, out)
	}
	if !strings.Contains(out, "no differences") || !strings.Contains(out, "replayed") {
		t.Fatalf("--repair output:\n%s", out)
	}
	rows, err := store.Orders(ctx, "phone", "eu")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].State != orders.Confirmed {
		t.Fatalf("rows after repair %+v: want 3, alice's confirmed", rows)
	}
	if _, err := ctl(t, args...); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

// TestOrdersReconcileErrors: what is wrong is named, with what to do.
func TestOrdersReconcileErrors(t *testing.T) {
	rs := redistest.Start(t)
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "orders.db")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", rs.Addr, "--dsn", dsn}, "--region is required"},
		{[]string{"--region", "eu", "--redis", "127.0.0.1:1", "--dsn", dsn}, "cannot reach Redis at 127.0.0.1:1"},
		{[]string{"--region", "eu", "--redis", rs.Addr, "--dsn", "mysql://x"}, "--dsn"},
		{[]string{"--region", "eu", "--redis", rs.Addr, "--dsn", dsn}, "sale phone is unknown in region eu"},
	} {
		t.Setenv("FLASHSALE_REDIS", "")
		t.Setenv("FLASHSALE_ORDERS_DSN", "")
		t.Setenv("FLASHSALE_REGION", "")
		_, err := ctl(t, append([]string{"orders", "reconcile", "phone", "--timeout", "2s"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want it to contain %q", c.args, err, c.want)
		}
	}
}

func hasDiff(ds []diffView, kind, resv string) bool {
	for _, d := range ds {
		if d.Kind == kind && d.Resv == resv {
			return true
		}
	}
	return false
}
