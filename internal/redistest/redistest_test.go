package redistest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A write acknowledged before kill -9 must be there after the restart: the
// helper really runs with AOF and appendfsync always.
func TestKillRestartKeepsAcknowledgedWrites(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fsync, err := c.ConfigGet(ctx, "appendfsync").Result()
	if err != nil || fsync["appendfsync"] != "always" {
		t.Fatalf("appendfsync = %v (%v), want always", fsync, err)
	}
	s.Restart()
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after kill -9 and restart: got %q, %v; want v", got, err)
	}
}

// A failover to a lagging replica, as a client of the old primary's
// address sees it: the replica is promoted (it stops following), the
// primary takes a write the replica never gets, then takes the replica's
// data over. The write is gone, the rest is there, and the server is a
// primary with a new replication id.
func TestPromoteAndTakeOver(t *testing.T) {
	ctx := context.Background()
	p := Start(t)
	r := StartReplica(t, p.Addr)
	c := p.Client()
	replID := func() string {
		t.Helper()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:master") {
			t.Fatalf("info replication: %v\n%s", err, info)
		}
		_, id, _ := strings.Cut(info, "master_replid:")
		id, _, _ = strings.Cut(id, "\r\n")
		return id
	}
	if err := c.Set(ctx, "kept", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d %v", n, err)
	}
	r.Promote()
	if err := c.Set(ctx, "lost", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := replID()
	p.TakeOver(r)
	if n, err := c.Exists(ctx, "kept", "lost").Result(); err != nil || n != 1 || c.Get(ctx, "kept").Val() != "1" {
		t.Fatalf("after the takeover: %d of kept and lost exist (%v), want kept only", n, err)
	}
	if after := replID(); after == before || after == "" {
		t.Fatalf("replication id %q before, %q after: want a new one", before, after)
	}
}
