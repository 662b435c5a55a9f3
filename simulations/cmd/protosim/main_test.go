package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
)

var lastLine = regexp.MustCompile(`^seeds=(\d+) violations=(\d+) stranded_max=(\d+) etcd_writes_per_1000=(\d+)$`)

func last(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestCleanRunSummary(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-seeds", "50", "-regions", "3"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	m := lastLine.FindStringSubmatch(last(out.String()))
	if m == nil {
		t.Fatalf("last line %q does not match %v", last(out.String()), lastLine)
	}
	if m[1] != "50" || m[2] != "0" {
		t.Fatalf("want seeds=50 violations=0, got %q", m[0])
	}
}

func TestInjectedBugFailsWithReplayHint(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-seeds", "200", "-inject-bug", "grant-before-ack"}, &out)
	if !errors.Is(err, errViolations) {
		t.Fatalf("want errViolations, got %v\n%s", err, out.String())
	}
	m := lastLine.FindStringSubmatch(last(out.String()))
	if m == nil || m[2] == "0" {
		t.Fatalf("last line %q: want violations > 0", last(out.String()))
	}
	if !strings.Contains(out.String(), "-inject-bug grant-before-ack") || !strings.Contains(out.String(), "replay: go run ./simulations/cmd/protosim -seed ") {
		t.Fatalf("no replay hint in:\n%s", out.String())
	}
}

func TestSingleSeedTrace(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-seed", "5", "-trace"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), " state leader=") || !strings.HasPrefix(last(out.String()), "seeds=1 violations=0") {
		t.Fatalf("trace output unexpected:\n%s", out.String()[:min(2000, out.Len())])
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-inject-bug", "nope"},
		{"-seeds", "0"},
		{"-regions", "0", "-seeds", "1"},
		{"extra"},
	} {
		var out bytes.Buffer
		if err := run(args, &out); err == nil || errors.Is(err, errViolations) {
			t.Errorf("%v: want a usage error, got %v", args, err)
		}
	}
}
