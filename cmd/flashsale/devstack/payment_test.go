package devstack

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"flashsale/regional"
	"flashsale/regional/orders"
	"flashsale/regional/payment"
)

// TestStackPaysAndRecordsOrders: the dev stack's sellers charge confirms
// through the shared dev provider and drain orders into the region's
// SQLite file; a provider outage answers 503 payment_unavailable.
func TestStackPaysAndRecordsOrders(t *testing.T) {
	s, err := Start(t.Context(), Options{Regions: []string{"eu"}, Sellers: 1, InsecureDevIdentity: true,
		DemoTotal: 10, DemoStart: 200 * time.Millisecond, DemoTTL: time.Minute, Payment: &payment.DevConfig{Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	r := s.Regions[0]
	if !strings.HasPrefix(r.OrdersDSN, "sqlite:///") || !strings.HasSuffix(r.OrdersDSN, "orders-eu.db") {
		t.Fatalf("OrdersDSN %q: want an absolute SQLite file under the data dir", r.OrdersDSN)
	}
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(r.Endpoint+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	buy := func(user string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			// Until the sale opens and the agent applied the grant, buys
			// answer not_started, sold_out or not_ready.
			status, m := post("/v1/flash-sale/buy", `{"itemId":"demo","userId":"`+user+`","requestId":"`+user+`"}`)
			if status == 201 {
				id, _ := m["reservationId"].(string)
				return id
			}
			if time.Now().After(deadline) {
				t.Fatalf("buy never succeeded: %d %v", status, m)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	confirm := func(user, id string) (int, map[string]any) {
		return post("/v1/flash-sale/reservations/"+id+"/confirm", `{"itemId":"demo","userId":"`+user+`"}`)
	}

	id := buy("alice")
	if status, m := confirm("alice", id); status != 200 {
		t.Fatalf("confirm: %d %v", status, m)
	}
	if _, n := s.Payment.Charged(); n != 1 {
		t.Fatalf("%d payments, want 1", n)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows, err := r.Orders.Orders(context.Background(), "demo", "eu")
		if err == nil && len(rows) == 1 && rows[0].Resv == id && rows[0].State == orders.Confirmed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order rows %+v (%v), want %s confirmed", rows, err, id)
		}
		time.Sleep(20 * time.Millisecond)
	}

	s.Payment.SetDown(true)
	id2 := buy("bob")
	if status, m := confirm("bob", id2); status != 503 || m["code"] != regional.CodePaymentUnavailable {
		t.Fatalf("confirm while payment is down: %d %v, want 503 %s", status, m, regional.CodePaymentUnavailable)
	}
}
