package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/regional/orders"
)

// TestRegionalRolePaymentAndOrders runs `flashsale regional -payment dev
// -orders-dsn sqlite://...`: a confirm goes through the dev provider and
// the order row reaches SQLite; a bad -payment or DSN is refused up front.
func TestRegionalRolePaymentAndOrders(t *testing.T) {
	rs := redistest.Start(t)
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "orders-eu.db")
	start := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	dir := t.TempDir()
	path := filepath.Join(dir, "eu.yaml")
	writeTestFile(t, path, `
preset: dev
region: eu
listen: 127.0.0.1:0
redis: `+rs.Addr+`
identity: {insecureDev: true}
sales:
  - {id: phone, total: 10, ceiling: 5, startsAt: "`+start+`", reservationTTL: 1m}
`)

	for _, bad := range [][]string{{"-payment", "stripe"}, {"-orders-dsn", "mysql://x"}} {
		err := run(context.Background(), append([]string{"regional", "-config", path}, bad...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Fatalf("%v: err = %v, want one naming %s", bad, err, bad[0])
		}
	}

	line, cancel, done := startRole(t, []string{"regional", "-config", path, "-payment", "dev", "-orders-dsn", dsn})
	defer cancel()
	if field(line, "payment") != "dev" || field(line, "orders") != dsn {
		t.Fatalf("startup line %q: want payment=dev orders=%s", line, dsn)
	}
	base := "http://" + field(line, "http")
	post := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	status, r := post("/v1/flash-sale/buy", `{"itemId":"phone","userId":"alice","requestId":"1"}`)
	if status != 201 {
		t.Fatalf("buy: %d %v", status, r)
	}
	id, _ := r["reservationId"].(string)
	// The dev provider fails 1% and declines 2% of calls: retry a failure
	// (same payment id), accept either end.
	var final int
	for range 20 {
		status, r = post("/v1/flash-sale/reservations/"+id+"/confirm", `{"itemId":"phone","userId":"alice"}`)
		if status != 503 {
			final = status
			break
		}
	}
	want := orders.Confirmed
	switch final {
	case 200:
	case 402:
		want = orders.Reserved // declined: still held
	default:
		t.Fatalf("confirm: %d %v", status, r)
	}
	// The seller's consumer writes the row; read it from beside, as the
	// payment team would.
	store, err := orders.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var rows []orders.Order
	waitUntil(t, "the order row in SQLite", 15*time.Second, func() bool {
		rows, err = store.Orders(context.Background(), "phone", "eu")
		return err == nil && len(rows) == 1 && rows[0].State == want
	})
	if rows[0].Resv != id || rows[0].User != "alice" {
		t.Fatalf("SQL row %+v, want reservation %s of alice", rows[0], id)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func writeTestFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
