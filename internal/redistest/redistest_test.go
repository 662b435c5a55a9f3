package redistest

import (
	"context"
	"testing"
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
