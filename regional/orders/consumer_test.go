package orders

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"flashsale/internal/pgtest"
	"flashsale/internal/redistest"
	"flashsale/quota/layout"
)

func testConfig(rdb *redis.Client, s Store, name string, sales ...string) Config {
	cfg := DefaultConfig()
	cfg.Redis, cfg.Store, cfg.Consumer = rdb, s, name
	cfg.Sales = func() []string { return sales }
	cfg.Block = 100 * time.Millisecond
	cfg.ClaimMinIdle = 300 * time.Millisecond
	cfg.ClaimEvery = 50 * time.Millisecond
	cfg.SalesEvery = 50 * time.Millisecond
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.Registerer = prometheus.NewRegistry()
	return cfg
}

func startConsumer(t *testing.T, cfg Config) *Consumer {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func lagOf(rdb *redis.Client, sale string) int64 {
	n, err := Lag(context.Background(), rdb, layout.StreamKey(sale), "orders-sql")
	if err != nil {
		return -1
	}
	return n
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(DefaultConfig()); err == nil {
		t.Fatal("New without Redis/Store/Sales succeeded")
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	cfg := testConfig(rdb, nil, "c")
	if _, err := New(cfg); err == nil {
		t.Fatal("New without Store succeeded")
	}
	mem := sqliteMem(t)
	cfg = testConfig(rdb, mem, "c")
	cfg.Block, cfg.ClaimMinIdle = time.Second, time.Second
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted a lease shorter than 3 reads")
	}
	cfg = testConfig(rdb, mem, "c")
	cfg.BatchSize = 0
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted BatchSize 0")
	}
	var c *Consumer
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// 10,000 reservations with random confirm, cancel, extend and expiry: the
// rows equal the ledger's final state exactly, in both stores.
func TestDrain10kReservations(t *testing.T) {
	eachStore(t, func(t *testing.T, s Store) {
		rdb := redistest.Start(t).Client()
		evs, want := genEvents("s1", "eu", 10_000, 42)
		xaddAll(t, rdb, evs)
		cfg := testConfig(rdb, s, "c1", "s1")
		start := time.Now()
		c := startConsumer(t, cfg)
		eventually(t, "stream drained", func() bool { return lagOf(rdb, "s1") == 0 })
		t.Logf("drained in %v", time.Since(start))
		checkRows(t, s, "s1", want)
		if got := metricValue(c.m.rows.WithLabelValues("s1")); got != float64(len(evs)) {
			t.Errorf("rows written metric = %v, want %d", got, len(evs))
		}
		eventually(t, "lag metric back to 0", func() bool { return metricValue(c.m.lag.WithLabelValues("s1")) == 0 })
		t.Logf("%d events, %d reservations", len(evs), len(want))
	})
}

// A consumer dies after its SQL commit and before XACK; another consumer
// (claiming the dead one's pending entries) or the same one restarted
// finishes the job: no missing row, no duplicate, no state moved backwards.
func TestCrashBetweenCommitAndAck(t *testing.T) {
	for _, sameName := range []bool{false, true} {
		name := "claimed-by-another"
		if sameName {
			name = "same-consumer-restarted"
		}
		t.Run(name, func(t *testing.T) {
			s := openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
			rdb := redistest.Start(t).Client()
			evs, want := genEvents("s1", "eu", 2_000, 7)
			xaddAll(t, rdb, evs)

			cfg := testConfig(rdb, s, "c1", "s1")
			cfg.BatchSize = 100
			batches := 0
			crashed := make(chan struct{})
			cfg.afterCommit = func(string, Batch) error {
				batches++
				if batches == 3 {
					close(crashed)
					return errors.New("crash after commit")
				}
				return nil
			}
			c1 := startConsumer(t, cfg)
			<-crashed
			_ = c1.Close()

			pend, err := rdb.XPending(context.Background(), layout.StreamKey("s1"), "orders-sql").Result()
			if err != nil {
				t.Fatal(err)
			}
			if pend.Count != 100 {
				t.Fatalf("pending after crash = %d, want the 100 committed but unacked entries", pend.Count)
			}
			rows, _ := s.Orders(context.Background(), "s1", "")
			if len(rows) == 0 {
				t.Fatal("no rows committed before the crash")
			}

			cfg2 := testConfig(rdb, s, "c2", "s1")
			if sameName {
				cfg2.Consumer = "c1"
				cfg2.ClaimMinIdle = time.Hour // only the own-pending path may recover them
			}
			startConsumer(t, cfg2)
			eventually(t, "stream drained", func() bool { return lagOf(rdb, "s1") == 0 })
			checkRows(t, s, "s1", want)
		})
	}
}

// PostgreSQL dies mid-drain: the consumer keeps retrying without acking
// anything it could not write, and finishes once PostgreSQL is back.
func TestPostgresRestartMidDrain(t *testing.T) {
	pg := pgtest.Start(t)
	s := openTestStore(t, pg.DSN)
	rdb := redistest.Start(t).Client()
	evs, want := genEvents("s1", "eu", 10_000, 99)
	xaddAll(t, rdb, evs)

	cfg := testConfig(rdb, s, "c1", "s1")
	cfg.BatchSize = 50
	c := startConsumer(t, cfg)
	eventually(t, "some rows written", func() bool { return metricValue(c.m.rows.WithLabelValues("s1")) >= 1000 })
	pg.Kill()
	eventually(t, "SQL errors seen", func() bool { return metricValue(c.m.errs.WithLabelValues("sql")) >= 3 })
	lagDown := lagOf(rdb, "s1")
	if lagDown <= 0 {
		t.Fatalf("lag while PostgreSQL is down = %d, want > 0", lagDown)
	}
	// While the database is down nothing more may be acknowledged.
	time.Sleep(300 * time.Millisecond)
	if l := lagOf(rdb, "s1"); l != lagDown {
		t.Fatalf("lag moved from %d to %d while PostgreSQL was down", lagDown, l)
	}
	pg.Restart()
	eventually(t, "stream drained", func() bool { return lagOf(rdb, "s1") == 0 })
	checkRows(t, s, "s1", want)
}

// A malformed entry is recorded as a reject and acknowledged; it does not
// block the entries after it.
func TestMalformedEntryIsRejectedNotStuck(t *testing.T) {
	s := openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
	rdb := redistest.Start(t).Client()
	ctx := context.Background()
	xaddAll(t, rdb, []Event{{Type: TypeReserved, Sale: "s1", Region: "eu", Resv: "1", User: "u1", Req: "r1", At: 5, ExpiresAt: 10}})
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: layout.StreamKey("s1"), Values: map[string]any{"type": "bogus", "sale": "s1", "region": "eu", "resv": "2"}}).Err(); err != nil {
		t.Fatal(err)
	}
	xaddAll(t, rdb, []Event{{Type: TypeConfirmed, Sale: "s1", Region: "eu", Resv: "1", User: "u1", Req: "r1", At: 6}})
	c := startConsumer(t, testConfig(rdb, s, "c1", "s1"))
	eventually(t, "stream drained", func() bool { return lagOf(rdb, "s1") == 0 })
	checkRows(t, s, "s1", map[string]Order{"1": {Region: "eu", Resv: "1", User: "u1", State: Confirmed, ExpiresAt: msTime(10)}})
	rej, err := s.Rejects(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Resv != "2" || rej[0].Type != "bogus" {
		t.Fatalf("rejects = %+v, want the bogus entry", rej)
	}
	if got := metricValue(c.m.rejects.WithLabelValues("s1")); got != 1 {
		t.Fatalf("rejects metric = %v, want 1", got)
	}
}

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	panic("not a counter or gauge")
}

// Redis restarts (SIGKILL, AOF reload) mid-drain: the consumer backs off,
// reconnects, and the group's pending list survived, so nothing is lost.
func TestRedisRestartMidDrain(t *testing.T) {
	s := openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
	srv := redistest.Start(t)
	rdb := srv.Client()
	evs, want := genEvents("s1", "eu", 3_000, 5)
	xaddAll(t, rdb, evs)
	cfg := testConfig(rdb, s, "c1", "s1")
	cfg.BatchSize = 50
	c := startConsumer(t, cfg)
	eventually(t, "some rows written", func() bool { return metricValue(c.m.rows.WithLabelValues("s1")) >= 500 })
	if lagOf(rdb, "s1") == 0 {
		t.Fatal("drained before the restart: the test would prove nothing")
	}
	srv.Restart()
	eventually(t, "stream drained", func() bool { return lagOf(rdb, "s1") == 0 })
	checkRows(t, s, "s1", want)
}

// Close stops every goroutine the consumer started, even mid-read.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	s := openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
	rdb := redistest.Start(t).Client()
	c := startConsumer(t, testConfig(rdb, s, "c1", "s1", "s2"))
	eventually(t, "loops running", func() bool { return strings.Contains(stacks(), "orders.(*Consumer).drain") })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := stacks(); strings.Contains(st, "orders.(*Consumer)") {
		t.Fatalf("consumer goroutines left after Close:\n%s", st)
	}
	if err := c.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// Two sellers of a region run a consumer each: the lease gives the sale to
// one at a time, so its events are written in stream order (users who
// cancel and reserve again never trip the per-user index); when the holder
// stops, the other takes over.
func TestTwoConsumersOneSale(t *testing.T) {
	s := openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
	rdb := redistest.Start(t).Client()
	evs, want := genEvents("s1", "eu", 6_000, 3)
	third := len(evs) / 3
	cfg1 := testConfig(rdb, s, "c1", "s1")
	cfg1.BatchSize = 50
	cfg1.ClaimMinIdle = 5 * time.Second // a loaded test machine must not lapse c1's lease
	cfg2 := cfg1
	cfg2.Consumer, cfg2.Registerer = "c2", prometheus.NewRegistry()

	c1 := startConsumer(t, cfg1)
	xaddAll(t, rdb, evs[:third])
	eventually(t, "first third drained", func() bool { return lagOf(rdb, "s1") == 0 })
	c2 := startConsumer(t, cfg2)
	xaddAll(t, rdb, evs[third:2*third])
	eventually(t, "second third drained", func() bool { return lagOf(rdb, "s1") == 0 })
	if n := metricValue(c2.m.rows.WithLabelValues("s1")); n != 0 {
		t.Fatalf("c2 wrote %v rows while c1 held the lease", n)
	}
	_ = c1.Close()
	xaddAll(t, rdb, evs[2*third:])
	eventually(t, "last third drained", func() bool { return lagOf(rdb, "s1") == 0 })
	if n := metricValue(c2.m.rows.WithLabelValues("s1")); n == 0 {
		t.Fatal("c2 did not take over after c1 stopped")
	}
	checkRows(t, s, "s1", want)
	rej, err := s.Rejects(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 0 {
		t.Fatalf("%d rejects, first %+v", len(rej), rej[0])
	}
}

func sqliteMem(t *testing.T) Store {
	return openTestStore(t, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
}
