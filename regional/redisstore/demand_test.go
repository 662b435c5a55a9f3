package redisstore

import (
	"context"
	"math"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/quota/layout"
)

func TestDemandCountsFlushAndRate(t *testing.T) {
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	now := time.Unix(1000, 0)
	meter := NewDemandMeter(rdb, func() time.Time { return now })
	var a, b Demand // two sellers of one region

	if r := meter.Rate("s"); r != 0 {
		t.Fatalf("rate before any attempt = %v", r)
	}
	for range 60 {
		a.Count("s")
	}
	for range 40 {
		b.Count("s")
	}
	b.Count("other")
	if err := a.Flush(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx, rdb); err != nil { // nothing new: no double count
		t.Fatal(err)
	}
	if got, _ := rdb.Get(ctx, layout.SaleKey("s", "attempts")).Int64(); got != 100 {
		t.Fatalf("attempts in Redis = %d, want 100", got)
	}
	now = now.Add(2 * time.Second)
	// 100 attempts over 2 s is 50/s, smoothed by half against the prior 0.
	if r := meter.Rate("s"); math.Abs(r-25) > 1e-9 {
		t.Fatalf("rate = %v, want 25", r)
	}
	now = now.Add(time.Second)
	if r := meter.Rate("s"); math.Abs(r-12.5) > 1e-9 {
		t.Fatalf("rate with no new attempts = %v, want 12.5 (decaying)", r)
	}
}

// Counts that fail to reach Redis are kept for the next flush.
func TestDemandFlushKeepsCountsOnError(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	var d Demand
	d.Count("s")
	d.Count("s")
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Flush(ctx, rdb); err == nil {
		t.Fatal("flush to a dead Redis succeeded")
	}
	srv.Restart()
	if err := d.Flush(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	if got, _ := rdb.Get(context.Background(), layout.SaleKey("s", "attempts")).Int64(); got != 2 {
		t.Fatalf("attempts after retry = %d, want 2", got)
	}
}
