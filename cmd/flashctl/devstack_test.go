package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/cmd/flashsale/devstack"
)

// The real commands against a real dev stack (etcd, coordinator, three
// regions with redis-server, agents and sellers): readiness passes, a move
// waits for the source region's acknowledgement, a drain empties a region,
// rebalance plan/apply and the sale lifecycle work, and every answer can be
// read as JSON.
func TestAgainstDevStack(t *testing.T) {
	s, err := devstack.Start(t.Context(), devstack.Options{Regions: []string{"us", "eu", "ap"}, Sellers: 1,
		AdminToken: token, DemoTotal: 900, DemoStart: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn := []string{"--addr", s.Coord.Addr(), "--token", token}
	run1 := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(conn, args...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := run1(args...)
		if err != nil {
			t.Fatalf("flashctl %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	type region struct {
		Region    string   `json:"region"`
		Net       string   `json:"net"`
		Fresh     bool     `json:"fresh"`
		Available string   `json:"available"`
		Sellers   []string `json:"sellers"`
	}
	status := func() (regs map[string]region, unallocated string) {
		var st struct {
			Regions     []region `json:"regions"`
			Unallocated string   `json:"unallocated"`
		}
		if err := json.Unmarshal([]byte(must("status", "demo", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		regs = map[string]region{}
		for _, r := range st.Regions {
			regs[r.Region] = r
		}
		return regs, st.Unallocated
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		regs, _ := status()
		// Each region's one seller, as its agent's gossip membership saw
		// it, reaches the status through the region info in etcd.
		if regs["us"].Fresh && regs["eu"].Fresh && regs["ap"].Fresh && regs["ap"].Net != "0" && regs["ap"].Net != "" &&
			len(regs["us"].Sellers) == 1 && len(regs["eu"].Sellers) == 1 && len(regs["ap"].Sellers) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("regions never reported fresh with quota: %+v", regs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if table := must("status", "demo"); !strings.Contains(table, "SELLERS") {
		t.Fatalf("status table without the sellers column:\n%s", table)
	}
	out := must("readiness")
	if !strings.Contains(out, "READY") || strings.Contains(out, "NOT READY") {
		t.Fatalf("readiness of a healthy stack:\n%s", out)
	}

	// A region whose Redis stops fsyncing every write makes readiness fail,
	// naming the region, until it is durable again.
	rdb := redis.NewClient(&redis.Options{Addr: s.Regions[2].Redis.Addr})
	defer rdb.Close()
	readiness := func() (string, error) { out, _, err := run1("readiness", "demo"); return out, err }
	rdb.ConfigSet(context.Background(), "appendfsync", "everysec")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("readiness to flag ap's durability", func() bool {
		out, err := readiness()
		return err != nil && strings.Contains(out, "durable/ap") && strings.Contains(out, "FAIL")
	})
	rdb.ConfigSet(context.Background(), "appendfsync", "always")
	waitFor("readiness to pass again", func() bool { _, err := readiness(); return err == nil })

	// --redis checks a region's Redis itself against its durability mode:
	// a single node fsyncing every write passes as fsync, fails as wait
	// (no replica, min-replicas-to-write 0) with what to fix.
	ap := "ap=" + s.Regions[2].Redis.Addr
	if out := must("readiness", "demo", "--redis", ap); !strings.Contains(out, "redis-durability/ap") || strings.Contains(out, "NOT READY") {
		t.Fatalf("readiness --redis of a durable single node:\n%s", out)
	}
	out, _, err = run1("readiness", "demo", "--redis", ap, "--durability", "ap=wait")
	if err == nil || !strings.Contains(out, "min-replicas-to-write") || !strings.Contains(out, "NOT READY") {
		t.Fatalf("readiness --durability ap=wait of a single node: %v\n%s", err, out)
	}
	if _, _, err := run1("readiness", "--durability", "ap=wait"); err == nil || !strings.Contains(err.Error(), "no --redis") {
		t.Fatalf("--durability without --redis: %v", err)
	}

	// A move waits (with a progress bar on stderr) until ap acknowledged.
	regs, _ := status()
	before := regs["ap"].Net
	// The rebalancer may have a release of ap pending: an operator's move
	// or drain is refused until it is acknowledged, and tried again.
	whenNotPending := func(args ...string) (progress string) {
		waitFor(args[0]+" to be accepted", func() bool {
			var err error
			out, progress, err = run1(args...)
			if err != nil && !strings.Contains(err.Error(), "pending release") {
				t.Fatalf("%s: %v\n%s", args[0], err, out)
			}
			return err == nil
		})
		return progress
	}
	progress := whenNotPending("move", "demo", "--from", "ap", "--to", "us", "--units", "1", "--wait", "20s")
	if !strings.Contains(progress, "releases acknowledged") {
		t.Fatalf("no progress shown while waiting: %q", progress)
	}
	regs, _ = status()
	if regs["ap"].Net == before {
		t.Fatalf("ap's net grant still %s after an acknowledged move", before)
	}

	// Drain ap for this sale: once acknowledged it holds nothing unsold.
	whenNotPending("drain", "ap", "--sale", "demo", "--wait", "20s")
	regs, _ = status()
	if regs["ap"].Available != "0" {
		t.Fatalf("ap still has %s available after a drain", regs["ap"].Available)
	}

	var plan struct {
		Sale string `json:"sale"`
	}
	if err := json.Unmarshal([]byte(must("rebalance", "plan", "demo", "-o", "json")), &plan); err != nil || plan.Sale != "demo" {
		t.Fatalf("rebalance plan JSON: %v %+v", err, plan)
	}
	must("rebalance", "apply", "demo", "--dry-run")
	must("rebalance", "apply", "demo", "--wait", "20s")

	// Bad input against the live stack: one line that says what to do,
	// non-zero exit, and nothing changed.
	regs, unallocated := status()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "nosuch"}, "sale list"},
		{[]string{"move", "demo", "--from", "us", "--to", "eu", "--units", "100000", "--wait", "0"}, "above"},
		{[]string{"move", "demo", "--from", "us", "--to", "mars", "--units", "1", "--wait", "0"}, "mars"},
		{[]string{"drain", "mars", "--wait", "0"}, "mars"},
	} {
		out, _, err := run1(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("flashctl %v: err = %v (out %q), want one line mentioning %q", c.args, err, out, c.want)
		}
	}
	if after, u := status(); u != unallocated || after["us"].Net != regs["us"].Net || after["eu"].Net != regs["eu"].Net {
		t.Fatalf("refused commands changed the allocation: %+v/%s -> %+v/%s", regs, unallocated, after, u)
	}

	if out := must("sale", "pause", "demo"); !strings.Contains(out, "paused") {
		t.Fatalf("pause: %s", out)
	}
	must("sale", "resume", "demo")
	if out := must("sale", "end", "demo"); !strings.Contains(out, "ended") {
		t.Fatalf("end: %s", out)
	}
}
