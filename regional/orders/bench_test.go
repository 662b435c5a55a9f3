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

// BenchmarkLagAt2000 appends order events at a steady 2,000/s (in 10 ms
// ticks of 20) for 5 s while the consumer drains them, sampling the lag
// (entries not yet written to SQL and acked) every 10 ms, just before the
// next 20 arrive: it reports the
// mean and largest lag seen, and the lag 1 s after the producer stops.
//
//	go test ./regional/orders -run '^$' -bench LagAt2000 -benchtime 1x
func BenchmarkLagAt2000(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchLag(b, openTestStore(b, "sqlite://"+filepath.Join(b.TempDir(), "orders.db")))
	})
	b.Run("postgres", func(b *testing.B) {
		benchLag(b, openTestStore(b, pgtest.Fresh(b)))
	})
}

func benchLag(b *testing.B, s Store) {
	rdb := redistest.Start(b).Client()
	var worst, sum, samples int64
	var after int64
	for i := 0; b.Loop(); i++ {
		sale := "lag" + strconv.Itoa(i)
		evs, _ := genEvents(sale, "eu", 4_000, uint64(i))
		evs = evs[:min(len(evs), 10_000)]
		c, err := New(testConfig(rdb, s, "bench", sale))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		tick := time.NewTicker(10 * time.Millisecond)
		for at := 0; at < len(evs); at += 20 {
			<-tick.C
			// Sampled just before the next 20 arrive: what the previous
			// 10 ms left undrained.
			lag := lagOf(rdb, sale)
			worst, sum, samples = max(worst, lag), sum+lag, samples+1
			xaddAll(b, rdb, evs[at:min(at+20, len(evs))])
		}
		tick.Stop()
		time.Sleep(time.Second)
		after = max(after, lagOf(rdb, sale))
		_ = c.Close()
	}
	b.ReportMetric(float64(sum)/float64(samples), "mean-lag")
	b.ReportMetric(float64(worst), "max-lag")
	b.ReportMetric(float64(after), "lag-after-1s")
}
