package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/quota/layout"
	"flashsale/regional"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
)

const testSecret = "0123456789abcdef0123456789abcdef-loadgen"

// startRegions runs a real seller per region, each on its own redis-server
// and draining its order stream into its own SQLite order store, knowing
// the others' endpoints for redirects, with the sale's units split between
// them as static grants. A stand-in for the region agents copies the other
// regions' counters into each region's sale view, so sellers say sold_out
// only when the whole sale is sold (no coordinator moves quota here).
func startRegions(t *testing.T, sale string, grants map[string]int64) (endpoints, redisAddrs, orderDSNs string) {
	t.Helper()
	var total int64
	for _, g := range grants {
		total += g
	}
	stores := map[string]*redisstore.Store{}
	ports := map[string]int{}
	urls := map[string]string{}
	for r := range grants {
		ports[r] = redistest.FreePort(t)
		urls[r] = fmt.Sprintf("http://127.0.0.1:%d", ports[r])
	}
	var eps, rds, dsns []string
	for r, g := range grants {
		rs := redistest.Start(t)
		dsn := "sqlite://" + filepath.Join(t.TempDir(), "orders-"+r+".db")
		store, err := orders.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() }) // after the seller's Close: cleanups run last first
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
		stores[r] = redisstore.NewStore(rs.Client(), r)
		cfg.Sales = []layout.SaleSpec{{ID: sale, Total: total, PerUserLimit: 1, ReservationTTL: time.Hour, StartsAt: time.Now().Add(-time.Minute)}}
		cfg.StaticGrants = map[string]int64{sale: g}
		srv, err := regional.New(cfg, regional.Deps{Redis: rs.Client(), Orders: store})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		eps = append(eps, r+"="+urls[r])
		rds = append(rds, r+"="+rs.Addr)
		dsns = append(dsns, r+"="+dsn)
	}
	copyViews(t, sale, total, stores)
	return strings.Join(eps, ","), strings.Join(rds, ","), strings.Join(dsns, ",")
}

// copyViews does a region agent's view duty until the test ends: every
// 20 ms each region learns the others' sold and reserved.
func copyViews(t *testing.T, sale string, total int64, stores map[string]*redisstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			counts := map[string]redisstore.Counters{}
			for r, st := range stores {
				if c, err := st.Counters(ctx, sale); err == nil {
					counts[r] = c
				}
			}
			for r, st := range stores {
				v := redisstore.SaleView{Total: total, At: time.Now().UnixMilli()}
				for o, c := range counts {
					if o != r {
						v.OthersSold += c.Sold
						v.OthersReserved += c.Reserved
					}
				}
				_ = st.SetSaleView(ctx, sale, 0, v)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// The whole flow against two real sellers: tokens, misrouted attempts
// redirected home, confirms and cancels, a sellout, and the Redis check.
func TestLoadgenAgainstTwoRegions(t *testing.T) {
	eps, rds, _ := startRegions(t, "phone", map[string]int64{"eu": 25, "us": 15})
	csvPath := filepath.Join(t.TempDir(), "timeline.csv")
	plotDir := filepath.Join(t.TempDir(), "plots")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{
		"-endpoints", eps, "-redis", rds, "-regions", "eu=2,us=1", "-sale", "phone", "-total", "40",
		"-secret", testSecret, "-users", "300", "-workers", "8", "-max-requests", "300", "-duration", "1m",
		"-misroute", "0.3", "-confirm", "0.5", "-cancel", "0.3", "-timeout", "5s", "-retries", "1", "-retry-for", "1s",
		"-timeline", csvPath, "-bucket", "10ms", "-plots", plotDir,
	}, &out, &errOut)
	t.Log(out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"verify: ok", "attempts 300 ", "reserved ", "confirm:ok ", "cancel:ok ", "answers (every try, retries included): ", "retries per buyer: p50 "} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// A fifth of the reservations are left to expire (in an hour): the
	// sale ends all reserved, not sold out, and buyers are told so.
	if !strings.Contains(s, "all_reserved") || strings.Contains(s, "sold out after") {
		t.Errorf("want all_reserved answers and no sold_out")
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

// Demand far above the stock, every reservation paid for: every unit is
// sold at the end, both regions answer sold_out, the seed's strict check
// and the sold_out check pass, and the order stores agree; with a
// total above the grants the unit in no region's quota is named.
func TestLoadgenSelloutAndOrderStores(t *testing.T) {
	eps, rds, dsns := startRegions(t, "tv", map[string]int64{"eu": 10, "us": 5})
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{
		"-endpoints", eps, "-redis", rds, "-orders", dsns, "-expect-sellout", "-regions", "eu=2,us=1", "-sale", "tv", "-total", "15",
		"-secret", testSecret, "-users", "200", "-workers", "8", "-max-requests", "200", "-duration", "1m",
		"-misroute", "0.3", "-confirm", "1", "-cancel", "0", "-timeout", "5s", "-retries", "1", "-retry-for", "1s", "-json", jsonPath,
	}, &out, &errOut)
	t.Log(out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"verify: ok: sold ", " == total 15", "units: held 15 (sold + reserved), stranded 0 (in a region's quota, unsold), ungranted 0",
		"region eu: ceiling 10,", "region us: ceiling 5,", "sold out after (by users' home region): ", "sold_out "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Report struct {
			ByRegion map[string]int64 `json:"sold_out_after_by_region_ns"`
		} `json:"report"`
		Verdict struct {
			Held, Stranded int64
		} `json:"verdict"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	// Which regions' buyers came after the sellout varies; some did.
	if len(doc.Report.ByRegion) == 0 || doc.Verdict.Held != 15 {
		t.Errorf("-json: %s", b)
	}

	// Once the streams have drained, SQL holds every unit too.
	for _, want := range []string{"orders eu (SQL): rows 10, live 10", "orders us (SQL): rows 5, live 5"} {
		for i := 0; ; i++ {
			out.Reset()
			if err := run(context.Background(), []string{"-verify-only", "-redis", rds, "-orders", dsns, "-sale", "tv", "-total", "15"}, &out, &errOut); err != nil {
				t.Fatalf("verify-only: %v\n%s", err, out.String())
			}
			if strings.Contains(out.String(), want) {
				break
			}
			if i == 200 {
				t.Fatalf("order store never showed %q:\n%s", want, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	out.Reset()
	err = run(context.Background(), []string{"-verify-only", "-redis", rds, "-orders", dsns, "-expect-sellout", "-sale", "tv", "-total", "16"}, &out, &errOut)
	if err == nil || !strings.Contains(out.String(), "sellout: held 15") || !strings.Contains(out.String(), "ungranted 1") {
		t.Fatalf("-expect-sellout with a unit never granted: err %v, output:\n%s", err, out.String())
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
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-plots", t.TempDir()},              // no -redis: no stock to plot
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-orders", "eu=sqlite:///tmp/x.db"}, // no -redis
		{"-sale", "s", "-endpoints", "eu=http://127.0.0.1:1", "-expect-sellout"},                  // no -redis
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
	// Refused for the order store itself, before any Redis is read (none
	// listens on port 1).
	for _, dsn := range []string{
		"sqlite://" + filepath.Join(t.TempDir(), "missing.db"), // would be created empty
		"postgres://u:p@10.0.0.1/db",
		"postgres://u:p@127.0.0.1/db?host=db.example.com",
		"mysql://127.0.0.1/db",
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"-sale", "s", "-verify-only", "-redis", "eu=127.0.0.1:1", "-total", "5", "-orders", "eu=" + dsn}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "-orders eu: ") {
			t.Errorf("-orders eu=%s: %v", dsn, err)
		}
	}
}
