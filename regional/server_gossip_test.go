package regional

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"flashsale/regional/gossip"
)

// sibling starts another seller of the same region on e's Redis and clock.
func (e *testEnv) sibling(t *testing.T, mutate func(*Config)) *testEnv {
	t.Helper()
	s := *e
	s.reg = prometheus.NewRegistry()
	srv := s.startServer(t, mutate, nil)
	s.srv, s.url = srv, "http://"+srv.Addr()
	return &s
}

// scriptCalls is how many scripts Redis has run (INFO commandstats).
func (e *testEnv) scriptCalls(t *testing.T) int64 {
	t.Helper()
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		calls, _, _ := strings.Cut(rest, ",")
		c, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		n += c
	}
	return n
}

func gossipConfig(seeds ...string) *gossip.Config {
	return &gossip.Config{Preset: gossip.PresetLocal, Plaintext: true, Seeds: seeds}
}

// TestGossipSpreadsSellout: two sellers of a region gossip. One sells
// the region's stock out; the other, which never reads Redis again
// (refresh every hour), learns it from the first one's read and answers
// its next buyer from memory: no script reaches Redis. A seller outside
// the cluster (the negative control) still sends its buyer to Redis.
func TestGossipSpreadsSellout(t *testing.T) {
	a := newEnv(t, func(c *Config) { c.Gossip = gossipConfig() })
	b := a.sibling(t, func(c *Config) {
		c.Gossip = gossipConfig(a.srv.gossip.Addr())
		c.RefreshInterval = time.Hour
	})
	alone := a.sibling(t, func(c *Config) { c.RefreshInterval = time.Hour })
	waitFor(t, func() bool { return a.srv.liveSellers() == 2 && b.srv.liveSellers() == 2 })
	if st := b.status(); st.Sellers != 2 || st.RegionRemaining != 100 {
		t.Fatalf("b's status before: %+v", st)
	}
	for i := range 100 {
		expect(t, a.buy(fmt.Sprint("u", i), fmt.Sprint("r", i)), http.StatusCreated, "")
	}
	// The 101st finds the region dry; the seller reads Redis at once and
	// publishes what it read.
	expect(t, a.buy("late", "late-a"), http.StatusServiceUnavailable, "")
	waitFor(t, func() bool { return b.status().RegionRemaining == 0 })
	before := a.scriptCalls(t)
	ans := b.buy("other", "late-b")
	if ans.status != http.StatusServiceUnavailable || ans.code() != CodeAllReserved {
		t.Fatalf("b after the gossip: %d %s, want 503 %s", ans.status, ans.body, CodeAllReserved)
	}
	if after := a.scriptCalls(t); after != before {
		t.Fatalf("b ran %d scripts for a buy it could answer from gossip", after-before)
	}
	// Without gossip the same buy goes to Redis, which refuses it.
	ans = alone.buy("third", "late-c")
	if ans.status != http.StatusServiceUnavailable {
		t.Fatalf("alone: %d %s", ans.status, ans.body)
	}
	if after := a.scriptCalls(t); after == before {
		t.Fatal("the control seller answered without Redis too: the check above proves nothing")
	}
	if got := metric(t, b.reg, "flashsale_seller_gossip_stock_applied_total", nil); got < 1 {
		t.Fatalf("b applied %v gossiped reads", got)
	}
}

// TestGossipSharesLimits: the per-user limit is divided among the live
// sellers and taken back when one leaves.
func TestGossipSharesLimits(t *testing.T) {
	limited := func(c *Config) { c.UserRate, c.UserBurst = 4, 4 }
	a := newEnv(t, func(c *Config) { limited(c); c.Gossip = gossipConfig() })
	b := a.sibling(t, func(c *Config) { limited(c); c.Gossip = gossipConfig(a.srv.gossip.Addr()) })
	waitFor(t, func() bool { return a.srv.userLim.share.Load() == 2 && b.srv.userLim.share.Load() == 2 })
	// With the limit halved, a's bucket holds 2 tokens: the third buy
	// attempt of one user in the same instant is refused.
	tok := token(t, testSecret, "spray", "eu", a.clock.Now().Add(time.Hour))
	codes := []string{}
	for i := range 3 {
		ans := a.do("POST", "/v1/flash-sale/buy", tok, map[string]string{"itemId": testSale, "requestId": fmt.Sprint("s", i)})
		codes = append(codes, fmt.Sprint(ans.status))
	}
	if codes[2] != "429" {
		t.Fatalf("answers %v: want the third refused (429) with the limit shared by two", codes)
	}
	if err := b.srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return a.srv.userLim.share.Load() == 1 })
	if got := a.status().Sellers; got != 1 {
		t.Fatalf("status sellers %d after b left", got)
	}
}

// TestGossipDemandAndPartition: each seller gossips its buy attempts and
// the sum over the live sellers is the region's demand, what the agent's
// meter reads (redisstore.NewDemandMeterFunc). Then one seller is cut off
// from the cluster (its member dies): it still answers correctly, from
// Redis, which stays the authority.
func TestGossipDemandAndPartition(t *testing.T) {
	a := newEnv(t, func(c *Config) { c.Gossip = gossipConfig() })
	b := a.sibling(t, func(c *Config) {
		c.Gossip = gossipConfig(a.srv.gossip.Addr())
		c.RefreshInterval = time.Hour
	})
	waitFor(t, func() bool { return a.srv.liveSellers() == 2 && b.srv.liveSellers() == 2 })
	for i := range 3 {
		expect(t, a.buy(fmt.Sprint("a", i), fmt.Sprint("ra", i)), http.StatusCreated, "")
	}
	for i := range 2 {
		expect(t, b.buy(fmt.Sprint("b", i), fmt.Sprint("rb", i)), http.StatusCreated, "")
	}
	demand := func(e *testEnv) int64 {
		n, err := e.srv.GossipNode().Demand(context.Background(), testSale)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, func() bool { return demand(a) == 5 && demand(b) == 5 })

	// b's member dies; b keeps serving HTTP.
	if err := b.srv.gossip.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 98; i++ { // 3 + 2 + 95: the region's 100 units
		expect(t, a.buy(fmt.Sprint("a", i), fmt.Sprint("ra", i)), http.StatusCreated, "")
	}
	expect(t, a.buy("late", "late-a"), http.StatusServiceUnavailable, CodeAllReserved)
	if got := b.status().RegionRemaining; got == 0 {
		t.Fatal("b learned the sellout although it was cut off: the partition below proves nothing")
	}
	before := a.scriptCalls(t)
	expect(t, b.buy("other", "late-b"), http.StatusServiceUnavailable, CodeAllReserved)
	if a.scriptCalls(t) == before {
		t.Fatal("the cut-off seller answered without asking Redis")
	}
}
