package redisproc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestHAFailoverAndSupervision: kill -9 of the primary is followed by a
// Sentinel failover; a failover client writes to the new primary; the
// supervisor restarts the killed node, which comes back as a replica of
// the new primary (not as a second primary) and has the write.
func TestHAFailoverAndSupervision(t *testing.T) {
	if testing.Short() {
		t.Skip("sentinel failover takes seconds")
	}
	ctx := context.Background()
	h, err := StartHA(ctx, HAOptions{Dir: t.TempDir(), Supervise: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: h.MasterName, SentinelAddrs: h.SentinelAddrs()})
	defer c.Close()
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old, err := h.Primary(ctx)
	if err != nil || old != h.Nodes[0] {
		t.Fatalf("primary %v %v, want node 0", old, err)
	}
	old.Kill()
	if err := h.WaitNewPrimary(ctx, old.Addr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.Set(ctx, "k", "after", 0).Err() != nil { // the client follows the switch
		if time.Now().After(deadline) {
			t.Fatal("the failover client never wrote to the new primary")
		}
		time.Sleep(50 * time.Millisecond)
	}
	oc := redis.NewClient(&redis.Options{Addr: old.Addr})
	defer oc.Close()
	// The supervisor waits for the failover before it restarts the node.
	for info := ""; !strings.Contains(info, "role:slave"); info, _ = oc.Info(ctx, "replication").Result() {
		if time.Now().After(deadline) {
			t.Fatalf("the killed node never came back as a replica: %q", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for old.Restarts() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the killed node restarted %d times, want 1", old.Restarts())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for oc.Get(ctx, "k").Val() != "after" {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node never caught up: %q", oc.Get(ctx, "k").Val())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSupervisedRestartAfterKill: a supervised server killed with -9 (a
// crash) is started again on its port and dir, with its AOF: what the dev
// stack does for every Redis child. Close stops it for good.
func TestSupervisedRestartAfterKill(t *testing.T) {
	ctx := context.Background()
	p, err := Start(ctx, Options{Dir: t.TempDir(), Supervise: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for c.Get(ctx, "k").Val() != "v" {
		if time.Now().After(deadline) {
			t.Fatal("the killed server was not started again with its data")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for p.Restarts() != 1 { // counted once the restarted server answered
		if time.Now().After(deadline) {
			t.Fatalf("restarts %d, want 1", p.Restarts())
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = p.Close()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("the server answers after Close: the supervisor started it again")
	}
}
