package redisstore

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// TestUnsafeNoFenceSwitch: the fence is on by default (a seller's stale
// epoch and a primary the agent has not reconciled are refused), and the
// test-only FLASHSALE_UNSAFE_NO_FENCE=1, read at start, turns both checks
// off (this test runs itself again in a child process with it set).
func TestUnsafeNoFenceSwitch(t *testing.T) {
	unsafe := os.Getenv(EnvUnsafeNoFence) == "1"
	if unsafe != UnsafeNoFence() {
		t.Fatalf("UnsafeNoFence() = %t with %s=%q", UnsafeNoFence(), EnvUnsafeNoFence, os.Getenv(EnvUnsafeNoFence))
	}
	ctx := context.Background()
	s, _, rdb := newTestStore(t)
	c, err := s.Counters(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resume(ctx, "s", 1, 2, c.Primary, 10); err != nil {
		t.Fatal(err)
	}
	reserve := func(user string, epoch int64) quota.Outcome {
		t.Helper()
		res, err := s.Reserve(ctx, "s", ReserveRequest{User: user, RequestID: user, ID: NewReservationID(time.Now()), Now: time.Now(),
			TTL: time.Minute, PerUserLimit: 1, Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		return res.Outcome
	}
	stale := reserve("u1", 1)
	// The primary as the agent last reconciled it is another server now
	// (as after a failover to a replica).
	if err := rdb.HSet(ctx, layout.SaleKey("s", "ledger"), "epoch_primary", "elsewhere").Err(); err != nil {
		t.Fatal(err)
	}
	unreconciled := reserve("u2", 2)
	want := []quota.Outcome{quota.StaleEpoch, quota.Halted}
	if unsafe {
		want = []quota.Outcome{quota.Reserved, quota.Reserved}
	}
	if stale != want[0] || unreconciled != want[1] {
		t.Fatalf("unsafe=%t: a stale epoch answered %v, an unreconciled primary %v; want %v", unsafe, stale, unreconciled, want)
	}
	if unsafe {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnsafeNoFenceSwitch$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), EnvUnsafeNoFence+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnsafeNoFenceSwitch") {
		t.Fatalf("with %s=1: %v\n%s", EnvUnsafeNoFence, err, out)
	}
}
