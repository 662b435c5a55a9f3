package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

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
		if row.Attempts == 0 || row.Outcomes[outcome] != row.Attempts {
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
