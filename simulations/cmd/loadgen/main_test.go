package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/internal/layout"
	"flashsale/internal/redistest"
	"flashsale/regional"
)

const testSecret = "0123456789abcdef0123456789abcdef-loadgen"

// startRegions runs a real seller per region, each on its own redis-server,
// knowing the others' endpoints for redirects, with the sale's units split
// between them as static grants.
func startRegions(t *testing.T, sale string, grants map[string]int64) (endpoints, redisAddrs string) {
	t.Helper()
	ports := map[string]int{}
	urls := map[string]string{}
	for r := range grants {
		ports[r] = redistest.FreePort(t)
		urls[r] = fmt.Sprintf("http://127.0.0.1:%d", ports[r])
	}
	var eps, rds []string
	for r, g := range grants {
		rs := redistest.Start(t)
		cfg := regional.DevConfig()
		cfg.Region = r
		cfg.ListenAddr = fmt.Sprintf("127.0.0.1:%d", ports[r])
		cfg.JWT.HS256Secret = []byte(testSecret)
		cfg.Regions = map[string]string{}
		for o, u := range urls {
			if o != r {
				cfg.Regions[o] = u
			}
		}
		cfg.Sales = []layout.SaleSpec{{ID: sale, Total: 40, PerUserLimit: 1, ReservationTTL: time.Hour, StartsAt: time.Now().Add(-time.Minute)}}
		cfg.StaticGrants = map[string]int64{sale: g}
		srv, err := regional.New(cfg, regional.Deps{Redis: rs.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		eps = append(eps, r+"="+urls[r])
		rds = append(rds, r+"="+rs.Addr)
	}
	return strings.Join(eps, ","), strings.Join(rds, ",")
}

// The whole flow against two real sellers: tokens, misrouted attempts
// redirected home, confirms and cancels, a sellout, and the Redis check.
func TestLoadgenAgainstTwoRegions(t *testing.T) {
	eps, rds := startRegions(t, "phone", map[string]int64{"eu": 25, "us": 15})
	csvPath := filepath.Join(t.TempDir(), "timeline.csv")
	plotDir := filepath.Join(t.TempDir(), "plots")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{
		"-endpoints", eps, "-redis", rds, "-regions", "eu=2,us=1", "-sale", "phone", "-total", "40",
		"-secret", testSecret, "-users", "300", "-workers", "8", "-max-requests", "300", "-duration", "1m",
		"-misroute", "0.3", "-confirm", "0.5", "-cancel", "0.3", "-timeout", "5s",
		"-timeline", csvPath, "-bucket", "10ms", "-plots", plotDir,
	}, &out, &errOut)
	t.Log(out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"verify: ok", "attempts 300 ", "sold out after (by users' home region): ", "reserved ", "sold_out ", "confirm:ok ", "cancel:ok "} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Misrouted attempts must have been followed to the home region, and
	// every token accepted.
	for _, bad := range []string{"wrong_region", "invalid_token", "unauthenticated", "redirect_", "error ", "timeout"} {
		if strings.Contains(s, bad) {
			t.Errorf("output has outcome %q", bad)
		}
	}

	// The timeline accounts for every attempt, and the stock it sampled
	// starts at the 40 units granted and never goes below zero.
	b, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(rows) < 2 || rows[0][1] != "attempts" || rows[0][7] != "remaining" {
		t.Fatalf("timeline: %v\n%s", err, b)
	}
	attempts := 0
	for _, r := range rows[1:] {
		n, _ := strconv.Atoi(r[1])
		attempts += n
		left, _ := strconv.ParseInt(r[7], 10, 64)
		if left < 0 || left > 40 {
			t.Errorf("timeline row %v: remaining out of [0, 40]", r)
		}
	}
	// Row 0 shows the stock at its end: the 40 granted less at most the
	// reservations of attempts started in it (cancels only give back).
	left0, _ := strconv.ParseInt(rows[1][7], 10, 64)
	reserved0, _ := strconv.ParseInt(rows[1][2], 10, 64)
	if left0 > 40 || left0 < 40-reserved0 {
		t.Errorf("first timeline row %v: remaining outside [40 - reserved, 40]", rows[1])
	}
	if attempts != 300 {
		t.Errorf("timeline counts %d attempts, want 300", attempts)
	}
	for _, name := range []string{"latency.png", "stock.png", "quota.png"} {
		f, err := os.Open(filepath.Join(plotDir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		_ = f.Close()
		if err != nil {
			t.Errorf("-plots %s: %v", name, err)
		}
	}

	// The check alone (as after a k6 run) agrees; with a total below what
	// was sold (a negative control) it must report the oversell and fail.
	out.Reset()
	if err := run(context.Background(), []string{"-verify-only", "-redis", rds, "-sale", "phone", "-total", "40"}, &out, &errOut); err != nil {
		t.Fatalf("verify-only: %v\n%s", err, out.String())
	}
	out.Reset()
	err = run(context.Background(), []string{"-verify-only", "-redis", rds, "-sale", "phone", "-total", "1"}, &out, &errOut)
	if err == nil || !strings.Contains(out.String(), "I1 oversell") {
		t.Fatalf("verify-only with total 1 after selling dozens: err %v, output:\n%s", err, out.String())
	}
}

func TestLoadgenRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-sale", "s", "-endpoints", "eu=http://10.0.0.1:8080"},
		{"-sale", "s", "-endpoints", "eu=http://example.com"},
		{"-endpoints", "eu=http://127.0.0.1:1"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-regions", "us=1"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-redis", "eu=127.0.0.1:1"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-redis", "eu=10.1.1.1:6379", "-total", "5"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-duration", "2h"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-secret", "short"},
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-plots", t.TempDir()}, // no -redis: no stock to plot
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
}
