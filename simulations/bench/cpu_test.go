package bench

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestUseSplitsCPUByWallTime(t *testing.T) {
	t0 := time.Unix(100, 0)
	a := cpuTimes{gen: 1, seller: 2, redis: 3, at: t0}
	b := cpuTimes{gen: 2, seller: 3.5, redis: 3.5, at: t0.Add(2 * time.Second)}
	u := use(a, b, 15000)
	want := CPUUse{Gen: 0.5, Seller: 0.75, Redis: 0.25, SellerPerReqUs: 100}
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"gen", u.Gen, want.Gen}, {"seller", u.Seller, want.Seller}, {"redis", u.Redis, want.Redis}, {"µs/req", u.SellerPerReqUs, want.SellerPerReqUs}} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if z := use(a, a, 10); z != (CPUUse{}) {
		t.Errorf("no wall time: %+v, want zero", z)
	}
}

func TestSellerCPUReadsTheProcessMetric(t *testing.T) {
	for _, tc := range []struct {
		body string
		want float64
		ok   bool
	}{
		{"# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\ngo_goroutines 7\n", 12.5, true},
		{"go_goroutines 7\n", 0, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(tc.body)) }))
		got, err := sellerCPU(context.Background(), srv.URL)
		srv.Close()
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("sellerCPU(%q) = %v, %v; want %v (ok %v)", tc.body, got, err, tc.want, tc.ok)
		}
	}
}
