package chaos

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestChaosShort runs the short suite (the scenarios marked Short, with
// ShortOptions) against the real binaries: what `make test` runs of
// `make chaos`. Every scenario must pass and every negative control be
// caught; a scenario that did not run fails the test. A failed history's
// visualization goes to results/ at the module root.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite runs real servers for about two minutes; not under -short")
	}
	scenarios, err := Select(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	o := ShortOptions()
	o.ResultsDir, o.Log = filepath.Join(root, "results"), &progress
	start := time.Now()
	rows := Suite(ctx, bin, filepath.Join(dir, "runs"), scenarios, o)
	var table bytes.Buffer
	PrintTable(&table, rows)
	t.Logf("short chaos suite in %v\n%s", time.Since(start).Round(time.Second), table.String())
	if len(rows) != len(scenarios) {
		t.Fatalf("%d rows for %d scenarios", len(rows), len(scenarios))
	}
	for _, r := range rows {
		if r.Failed() || r.Status == NotRun {
			t.Errorf("%s: %s %s", r.Scenario, r.Status, r.Note)
		}
	}
	if t.Failed() {
		t.Logf("progress:\n%s", progress.String())
	}
	if left := leftGoroutines(10 * time.Second); len(left) > 0 {
		t.Errorf("%d goroutines of the harness, go-redis or toxiproxy left after the suite:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// leftGoroutines waits up to within for every goroutine running the
// harness's code, go-redis's or toxiproxy's (other than this test's) to
// end, and returns the stacks of those left. (Embedded etcd's own peer
// connections are its business.)
func leftGoroutines(within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "TestChaosShort") || strings.Contains(g, "leftGoroutines") {
				continue
			}
			if strings.Contains(g, "flashsale/simulations/chaos") || strings.Contains(g, "go-redis") || strings.Contains(g, "toxiproxy") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}
