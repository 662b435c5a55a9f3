package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/testwait"
	"flashsale/quota/layout"
)

func reservedRequests(t testing.TB, rdb *redis.Client) map[string]string {
	t.Helper()
	m, err := rdb.HGetAll(context.Background(), layout.SaleKey("x", "req")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testwait.For(t, "the condition", 10*time.Second, cond)
}

func isErr(err, target error) bool { return err != nil && errors.Is(err, target) }

// TestBatcherDropsAtDeadline: a call whose deadline passes while it waits
// for a batch is dropped unsent (ErrDropped, nothing reserved); one sent
// whose answer is late hears ErrOutcomeUnknown, and its retry finds what
// was done.
func TestBatcherDropsAtDeadline(t *testing.T) {
	s, _, rdb := newTestStore(t)
	mustGrant(t, s, "x", 1, 10)
	b := NewBatcher(s, 1, 1)
	t.Cleanup(func() { _ = b.Close() })
	gate := make(chan struct{})
	entered := make(chan struct{}, 10)
	b.onBatch = func(string, int) { entered <- struct{}{}; <-gate }
	now := t0
	req := func(user string) ReserveRequest {
		return ReserveRequest{User: user, RequestID: "d-" + user, Now: now, TTL: time.Minute, PerUserLimit: 1}
	}
	// The first call is taken into a batch that the hook holds.
	ctx1, cancel1 := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { _, err := b.Reserve(ctx1, "x", req("a")); errc <- err }()
	<-entered
	// The second waits behind it; its caller gives up.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { _, err := b.Reserve(ctx2, "x", req("b")); errc <- err }()
	waitFor(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		q := b.sales["x"]
		return q != nil && len(q.waiting) == 1
	})
	cancel2()
	if err := <-errc; !isErr(err, ErrDropped) {
		t.Fatalf("waiting call: %v, want ErrDropped", err)
	}
	cancel1()
	if err := <-errc; !isErr(err, ErrOutcomeUnknown) {
		t.Fatalf("sent call: %v, want ErrOutcomeUnknown", err)
	}
	close(gate)
	waitFor(t, b.Idle)
	held := reservedRequests(t, rdb)
	if _, ok := held["d-b"]; ok {
		t.Fatal("the dropped call reserved a unit")
	}
	if _, ok := held["d-a"]; !ok {
		t.Fatal("the sent call did not run")
	}
	res, err := b.Reserve(context.Background(), "x", req("a"))
	if err != nil || res.Reservation.RequestID != "d-a" {
		t.Fatalf("retry of the unknown call: %+v %v", res, err)
	}
	// A deadline already past when the batch is taken: dropped unsent.
	ctx3, cancel3 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel3()
	if _, err := b.Reserve(ctx3, "x", req("c")); !isErr(err, ErrDropped) {
		t.Fatalf("past deadline: %v, want ErrDropped", err)
	}
	if _, ok := reservedRequests(t, rdb)["d-c"]; ok {
		t.Fatal("a call past its deadline reserved a unit")
	}
}
