package regional

import (
	"context"
	"net/http"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/regional/orders"
	"flashsale/regional/orders/orderstest"
	"flashsale/regional/payment"
	"flashsale/regional/redisstore"
)

// agentFence is the fence the tests' stand-in for the region agent writes
// under: above the seller's static grant (fence 0).
const agentFence = 1

// reconcile does what the region agent does to a primary (DESIGN §4.5):
// halt it, restore (what its witness knows), then resume selling on it under
// seller epoch epoch. The seller reads the new counters at once.
func (e *testEnv) reconcile(epoch int64, restore func(ctx context.Context, st *redisstore.Store)) {
	e.t.Helper()
	ctx := context.Background()
	st := e.srv.Store()
	if err := st.SetHalted(ctx, testSale, agentFence, true); err != nil {
		e.t.Fatal(err)
	}
	restore(ctx, st)
	if _, err := st.Resume(ctx, testSale, agentFence, epoch, e.counters().Primary, 100); err != nil {
		e.t.Fatal(err)
	}
	e.srv.refreshAll(ctx)
}

func restoreNothing(context.Context, *redisstore.Store) {}

// restoreActive is a witness that knows one active reservation: put back,
// then the counters recounted, as the agent's reconciliation does.
func (e *testEnv) restoreActive(r ReservationJSON, user, requestID string) func(context.Context, *redisstore.Store) {
	return func(ctx context.Context, st *redisstore.Store) {
		e.t.Helper()
		if _, err := st.Restore(ctx, testSale, agentFence, []redisstore.Restored{{ID: r.ReservationID, User: user, RequestID: requestID,
			State: quota.Active, ExpiresAt: r.ExpiresAt.UnixMilli(), CreatedAt: e.clock.Now().UnixMilli()}}); err != nil {
			e.t.Fatal(err)
		}
		if _, err := st.Recount(ctx, testSale, agentFence); err != nil {
			e.t.Fatal(err)
		}
	}
}

// withReplica starts a replica of e's Redis, then has the agent reconcile
// the primary under seller epoch 1 (in this order: a primary's first
// replica gives it a new replication id, which the fence takes for a new
// primary).
func (e *testEnv) withReplica() *redistest.Server {
	e.t.Helper()
	replica := redistest.StartReplica(e.t, e.redis.Addr)
	e.reconcile(1, restoreNothing)
	return replica
}

// failOver makes e's Redis fail over to replica, which misses its last
// writes, as the seller sees it: kept runs while the replica follows (and
// has it), lost after the replica was promoted (the old primary alone has
// it); then the seller's Redis holds the replica's data, on a primary the
// agent has not reconciled.
func (e *testEnv) failOver(replica *redistest.Server, kept, lost func()) {
	e.t.Helper()
	kept()
	if n, err := e.rdb.Wait(context.Background(), 1, 10*time.Second).Result(); err != nil || n != 1 {
		e.t.Fatalf("wait for the replica: %d %v", n, err)
	}
	replica.Promote()
	lost()
	e.redis.TakeOver(replica)
}

// expectHalted checks a retryable 503 halted: Retry-After and
// retryAfterMs, as every retryable refusal.
func expectHalted(t *testing.T, a answer, what string) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable || a.code() != CodeHalted || a.header.Get("Retry-After") == "" || a.retryHint(t) <= 0 {
		t.Fatalf("%s: %d %v %s, want a retryable 503 %s", what, a.status, a.header, a.body, CodeHalted)
	}
}

// TestFinishHaltedAfterFailover: after a failover to a replica that missed
// the last writes, the region is stopped until its agent reconciles the
// new primary. A confirm or cancel there is answered 503 halted, retryable:
// for the reservation the new primary lost (not 404: the buyer holds it and
// the restore brings it back) and for the one it has (the script refuses
// it). Nothing changes. Once the agent reconciled, both work.
func TestFinishHaltedAfterFailover(t *testing.T) {
	e := newEnv(t, nil)
	replica := e.withReplica()
	var kept, lost ReservationJSON
	e.failOver(replica, func() {
		a := e.buy("alice", "a1")
		expect(t, a, http.StatusCreated, "")
		kept = a.resv(t)
	}, func() {
		a := e.buy("bob", "b1")
		expect(t, a, http.StatusCreated, "")
		lost = a.resv(t)
	})
	if c := e.counters(); !c.Stopped() || c.Reserved != 1 {
		t.Fatalf("counters %+v after the failover: want stopped, alice's reservation only", c)
	}
	for _, f := range []struct{ op, user, id string }{
		{"confirm", "bob", lost.ReservationID},
		{"cancel", "bob", lost.ReservationID},
		{"confirm", "alice", kept.ReservationID},
		{"cancel", "alice", kept.ReservationID},
	} {
		e.srv.Sales().Get(testSale).halted.Store(false) // not answered from memory: each path runs
		expectHalted(t, e.finish(f.op, f.user, f.id), f.op+" of "+f.user+"'s reservation")
	}
	if c := e.counters(); c.Sold != 0 || c.Reserved != 1 {
		t.Fatalf("counters %+v after refused confirms and cancels: want nothing changed", c)
	}

	// The agent's witness (the order store) knows bob's reservation.
	e.reconcile(2, e.restoreActive(lost, "bob", "b1"))
	expect(t, e.finish("confirm", "bob", lost.ReservationID), http.StatusOK, "")
	expect(t, e.finish("cancel", "alice", kept.ReservationID), http.StatusOK, "")
	if c := e.counters(); c.Sold != 1 || c.Reserved != 0 {
		t.Fatalf("counters %+v after the reconciliation: want bob's unit sold", c)
	}
}

// TestPaidConfirmHaltedAfterFailover: the same failover under a seller that
// takes payment, with the SQL order store as the agent's witness. A confirm
// refused halted before the charge charges nothing (the lost reservation,
// or a region known to be stopped); one refused by the script after its
// charge is answered 503 halted too, and its retry after the
// reconciliation is not charged again (the payment id is the
// reservation's). Each buyer pays once.
func TestPaidConfirmHaltedAfterFailover(t *testing.T) {
	store := orderstest.SQLite(t)
	e := newPayEnv(t, quietDev(), payment.DefaultBreakerConfig(), store)
	replica := e.withReplica()
	var kept, lost string
	e.failOver(replica, func() {
		kept = e.buy("alice", "a1").resv(t).ReservationID
	}, func() {
		lost = e.buy("bob", "b1").resv(t).ReservationID
		// The order consumer drained it into SQL before the failover.
		waitFor(t, func() bool { return sqlState(t, store, lost) == orders.Reserved })
	})
	charged := func(want int) {
		t.Helper()
		if _, n := e.dev.Charged(); n != want {
			t.Fatalf("%d payments, want %d", n, want)
		}
	}
	sale := e.srv.Sales().Get(testSale)
	expectHalted(t, e.finish("confirm", "bob", lost), "confirm of the lost reservation")
	charged(0)
	// The refusal told the seller the region is stopped: alice is not charged.
	expectHalted(t, e.finish("confirm", "alice", kept), "confirm in a region known to be stopped")
	charged(0)
	// A seller that does not know yet charges, then the script refuses.
	sale.halted.Store(false)
	expectHalted(t, e.finish("confirm", "alice", kept), "confirm refused after its charge")
	charged(1)

	e.reconcile(2, func(ctx context.Context, st *redisstore.Store) {
		if _, err := orders.Restore(ctx, st, store, testSale, agentFence); err != nil {
			t.Fatal(err)
		}
	})
	expect(t, e.finish("confirm", "bob", lost), http.StatusOK, "")
	expect(t, e.finish("confirm", "alice", kept), http.StatusOK, "")
	charged(2)
	if c := e.counters(); c.Sold != 2 || c.Reserved != 0 {
		t.Fatalf("counters %+v after the reconciliation: want both units sold", c)
	}
}

// TestWipedLedgerHeldStopped: a Redis that lost everything (FLUSHALL, a
// restart without AOF) has no seller epoch left, so its scripts do not see
// a stopped region; the sellers, which read epoch 1 before, hold it stopped
// until the agent reconciles it under a newer epoch. Confirming the
// reservation the wipe took is 503 halted, not 404, and nobody buys.
func TestWipedLedgerHeldStopped(t *testing.T) {
	e := newEnv(t, nil)
	e.reconcile(1, restoreNothing)
	a := e.buy("alice", "a1")
	expect(t, a, http.StatusCreated, "")
	resv := a.resv(t)
	ctx := context.Background()
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	e.srv.refreshAll(ctx)
	if c := e.counters(); c.Stopped() || c.Epoch != 0 {
		t.Fatalf("wiped counters %+v: want no epoch, not stopped by themselves", c)
	}
	expectHalted(t, e.finish("confirm", "alice", resv.ReservationID), "confirm of the wiped reservation")
	expectHalted(t, e.finish("cancel", "alice", resv.ReservationID), "cancel of the wiped reservation")
	expectHalted(t, e.buy("bob", "b1"), "buy on the wiped ledger")
	// Not only from memory: the missing reservation's own path reads
	// the counters and finds the epoch gone back.
	e.srv.Sales().Get(testSale).halted.Store(false)
	expectHalted(t, e.finish("confirm", "alice", resv.ReservationID), "confirm of the wiped reservation, counters read")

	e.reconcile(2, e.restoreActive(resv, "alice", "a1"))
	expect(t, e.finish("confirm", "alice", resv.ReservationID), http.StatusOK, "")
	expect(t, e.buy("bob", "b1"), http.StatusCreated, "")
}
