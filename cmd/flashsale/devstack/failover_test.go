package devstack

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"flashsale/regional/redisstore"
)

// TestEndToEndRedisFailover: region us runs its Redis as a primary, a
// replica and three sentinels (durability wait+fsync); kill -9 of the
// primary mid-sale is followed by a Sentinel failover, and the sellers and
// the agent, through the failover client, sell on the new primary. Every
// reservation acknowledged before the kill is still held (a retry with its
// requestId answers it), the killed node comes back as a replica, readiness
// of the region's Redis passes again, and I1-I4 hold at every poll.
func TestEndToEndRedisFailover(t *testing.T) {
	o := Options{Regions: []string{"us", "eu", "ap"}, Sellers: 1, JWTSecret: secret,
		DemoTotal: 300, DemoStart: 300 * time.Millisecond, DemoTTL: time.Minute, HARegions: []string{"us"}}
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	us := s.Regions[0]
	if us.HA == nil || us.Redis != nil || us.Durability.Mode != redisstore.DurableWaitFsync {
		t.Fatalf("region us: HA %v, single %v, durability %v", us.HA, us.Redis, us.Durability)
	}
	waitOpen(t, s)
	stop := watch(t, s, true)
	defer stop()
	url := "http://" + us.Sellers[0].Addr()
	hc := &http.Client{Timeout: 10 * time.Second}
	// buyAll buys one unit for each of n us buyers, retrying each (same
	// requestId) until it holds one.
	buyAll := func(prefix string, n int) {
		for i := range n {
			b := buyer{user: fmt.Sprintf("%s%d", prefix, i), home: "us"}
			waitFor(t, "a reservation for "+b.user, func() bool {
				c := buy(t, hc, url, b, "req-"+b.user)
				return c == http.StatusCreated || c == http.StatusOK
			})
		}
	}
	buyAll("before", 20)

	ctx := context.Background()
	old, err := us.HA.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	if err := us.HA.WaitNewPrimary(ctx, old.Addr); err != nil {
		t.Fatal(err)
	}
	buyAll("after", 20)
	for i := range 20 {
		b := buyer{user: fmt.Sprintf("before%d", i), home: "us"}
		if c := buy(t, hc, url, b, "req-"+b.user); c != http.StatusOK {
			t.Fatalf("%s's reservation, acknowledged before the failover: retry answers %d, want 200 (the same reservation)", b.user, c)
		}
		if c := buy(t, hc, url, b, "another-"+b.user); c == http.StatusCreated || c == http.StatusOK {
			t.Fatalf("%s bought a second unit after the failover (%d)", b.user, c)
		}
	}
	c, err := us.Store.Counters(ctx, "demo")
	if err != nil || c.Sold+c.Reserved != 40 {
		t.Fatalf("us counters after the failover: %+v %v, want 40 units held", c, err)
	}
	// The supervisor restarts the killed node once Sentinel had time to
	// fail over; it rejoins as a replica and readiness passes again.
	var last []redisstore.Check
	waitFor(t, "readiness of us's Redis after the failover", func() bool {
		last = redisstore.CheckRedis(ctx, us.Conn, us.Durability)
		for _, c := range last {
			if !c.OK {
				return false
			}
		}
		return len(last) == 4
	})
	if !strings.Contains(fmt.Sprint(last), "online") {
		t.Fatalf("after the failover: checks %+v", last)
	}
	waitFor(t, "the supervisor's restart of the old primary", func() bool { return old.Restarts() >= 1 })
}
