package bench

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"flashsale/internal/childproc"
)

// answeredAs reports whether every attempt of row was answered outcome.
// For "reserved" it also takes the seller's answers to load: a buy sent to
// Redis but not answered within the 150 ms budget (outcome_unknown: the
// verifier checks Redis holds between the told and told + unknown), or
// dropped unsent at that deadline (overloaded: nothing was reserved). On
// a shared machine under -race that is timing, which a test must not
// assert; at least one attempt must still be reserved.
func answeredAs(row *Row, outcome string) bool {
	got := row.Outcomes[outcome]
	if outcome == "reserved" {
		if got == 0 {
			return false
		}
		got += row.Outcomes["outcome_unknown"] + row.Outcomes["overloaded"]
	}
	return row.Attempts > 0 && got == row.Attempts
}

// A tiny run of the whole bench (no PostgreSQL: its initdb alone takes
// seconds): every row is there, every attempt was answered as expected,
// and the seller's Redis passes the verifier. No speed is asserted.
func TestBenchSmoke(t *testing.T) {
	var out bytes.Buffer
	cfg := QuickConfig()
	cfg.Duration, cfg.Warmup, cfg.Rounds = 200*time.Millisecond, 50*time.Millisecond, 2
	cfg.Workers, cfg.Rate = 4, 100
	cfg.Delays = []time.Duration{80 * time.Millisecond}
	cfg.SkipPostgres = true
	cfg.SkipGoodput = true
	cfg.SkipQuota = true
	cfg.ResultsDir = t.TempDir()
	cfg.Out = &out
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := map[string]string{
		"bare": "reserved", "buy_before_sellout": "reserved", "buy_after_sellout": "sold_out",
		"redis_incr": "reserved", "redis_reserve_evalsha": "reserved", "redis_reserve_batcher": "reserved",
		"regional": "reserved", "global_0ms": "reserved", "global_80ms": "reserved", "buy_before_sellout_everysec": "reserved",
	}
	for name, outcome := range want {
		row := res.row(name)
		if row == nil {
			t.Errorf("row %s missing", name)
			continue
		}
		if !answeredAs(row, outcome) {
			t.Errorf("row %s: %d attempts, outcomes %v: want all %s", name, row.Attempts, row.Outcomes, outcome)
		}
	}
	if !res.Verdict.OK() || res.GeneratorReserved == 0 {
		t.Errorf("verdict %+v, generator reserved %d", res.Verdict, res.GeneratorReserved)
	}
	s := out.String()
	for _, line := range []string{"ratio buy_before_sellout/bare ", "ratio buy_after_sellout/bare ", "ratio global_80ms_p99/regional_p99 ", "verify bench-open: ok"} {
		if !strings.Contains(s, line) {
			t.Errorf("output lacks %q:\n%s", line, s)
		}
	}
}

// TestBenchStopsWhatItStarted: a run that ends early, here by its context
// in the middle of the first group, leaves no redis-server (the everysec
// Redis of group 1 included) and no target process behind.
func TestBenchStopsWhatItStarted(t *testing.T) {
	before, err := childproc.Children("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	// The HTTP targets run this test binary again.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(self)[:min(15, len(filepath.Base(self)))] // the kernel keeps 15 bytes of a name
	cfg := QuickConfig()
	cfg.Duration, cfg.Warmup, cfg.Rounds = 10*time.Second, time.Second, 2
	cfg.Workers, cfg.SkipPostgres, cfg.ResultsDir = 4, true, ""
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	cfg.Log = slog.New(startedHandler{sync.OnceFunc(func() { close(started) })})
	done := make(chan error, 1)
	go func() { _, err := Run(ctx, cfg); done <- err }()
	<-started
	if n, _ := childproc.Children("redis-server"); n < before+2 {
		t.Fatalf("%d redis-server children while group 1 runs, want at least %d (production and everysec)", n, before+2)
	}
	if n, _ := childproc.Children(comm); n < 3 {
		t.Fatalf("%d target processes (%s) while group 1 runs, want 3 (bare, seller, everysec seller)", n, comm)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	if n, err := childproc.Children("redis-server"); err != nil || n != before {
		t.Fatalf("%d redis-server children left (were %d): %v", n, before, err)
	}
	if n, err := childproc.Children(comm); err != nil || n != 0 {
		t.Fatalf("%d target processes (%s) left: %v", n, comm, err)
	}
}

// startedHandler calls started at each "bench: running" log line.
type startedHandler struct{ started func() }

func (h startedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h startedHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "bench: running" {
		h.started()
	}
	return nil
}
func (h startedHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h startedHandler) WithGroup(string) slog.Handler      { return h }

// TestBenchInProcess: with InProcess the targets are served by the
// generator's own process (no child process) and answer the same.
func TestBenchInProcess(t *testing.T) {
	var out bytes.Buffer
	cfg := QuickConfig()
	cfg.Duration, cfg.Warmup, cfg.Rounds = 200*time.Millisecond, 50*time.Millisecond, 2
	cfg.Workers, cfg.Rate, cfg.Delays = 4, 100, nil
	cfg.SkipPostgres, cfg.ResultsDir, cfg.Out = true, "", &out
	cfg.InProcess = true
	cfg.Only = []string{"bare", "buy_before_sellout", "buy_after_sellout", "regional", "global_0ms"}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(self)[:min(15, len(filepath.Base(self)))]
	cfg.Log = slog.New(startedHandler{func() {
		if n, _ := childproc.Children(comm); n != 0 {
			t.Errorf("%d target processes with InProcess, want 0", n)
		}
	}})
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for name, outcome := range map[string]string{"bare": "reserved", "buy_before_sellout": "reserved", "buy_after_sellout": "sold_out", "regional": "reserved", "global_0ms": "reserved"} {
		row := res.row(name)
		if row == nil || !answeredAs(row, outcome) {
			t.Errorf("row %s: %+v, want every attempt %s", name, row, outcome)
		}
	}
}
