package orders

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"flashsale/internal/pgtest"
	"flashsale/internal/redistest"
)

// BenchmarkDrain measures how fast the consumer drains an order stream
// already holding about 20,000 events into each store (rows/s: events
// written per second of wall time, Redis reads and acks included).
//
//	go test ./regional/orders -run '^$' -bench Drain -benchtime 3x
func BenchmarkDrain(b *testing.B) {
	for _, batch := range []int64{100, 500} {
		b.Run("sqlite/batch="+strconv.FormatInt(batch, 10), func(b *testing.B) {
			benchDrain(b, openTestStore(b, "sqlite://"+filepath.Join(b.TempDir(), "orders.db")), batch)
		})
		b.Run("postgres/batch="+strconv.FormatInt(batch, 10), func(b *testing.B) {
			benchDrain(b, openTestStore(b, pgtest.Fresh(b)), batch)
		})
	}
}

func benchDrain(b *testing.B, s Store, batch int64) {
	rdb := redistest.Start(b).Client()
	var events int
	var elapsed time.Duration
	for i := 0; b.Loop(); i++ {
		sale := "bench" + strconv.Itoa(i)
		evs, _ := genEvents(sale, "eu", 9_000, uint64(i))
		xaddAll(b, rdb, evs)
		cfg := testConfig(rdb, s, "bench", sale)
		cfg.BatchSize = batch
		start := time.Now()
		c, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		for lagOf(rdb, sale) != 0 {
			time.Sleep(2 * time.Millisecond)
		}
		elapsed += time.Since(start)
		events += len(evs)
		_ = c.Close()
	}
	b.ReportMetric(float64(events)/elapsed.Seconds(), "rows/s")
}
