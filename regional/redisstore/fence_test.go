package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"flashsale/internal/redistest"
	"flashsale/quota"
)

// TestFinishFencedAfterFailover: a failover to a replica that missed the
// primary's last writes leaves a primary the agent has not reconciled.
// There confirm and cancel answer quota.ErrHalted, for a reservation the
// new primary lost (never quota.ErrNoSuchResv: the agent's restore brings
// it back, and the buyer holds it) as for one it has, and change nothing.
// Once the agent reconciled it (halt, restore from the order store,
// recount, resume on this primary), both work again.
func TestFinishFencedAfterFailover(t *testing.T) {
	ctx := context.Background()
	old := redistest.Start(t)
	replica := redistest.StartReplica(t, old.Addr)
	rdb := old.Client()
	s := NewStore(rdb, "eu")
	mustGrant(t, s, "f", 1, 10)
	if _, err := s.Resume(ctx, "f", 1, 1, mustCounters(t, s, "f").Primary, 10); err != nil {
		t.Fatal(err)
	}
	reserve := func(user, req string) quota.Reservation {
		t.Helper()
		r := buy(user, req, t0)
		r.Epoch = 1
		return mustReserve(t, s, "f", r, quota.Reserved)
	}
	kept := reserve("ann", "a1")
	if n, err := rdb.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d %v", n, err)
	}
	replica.Promote()            // the failover: the replica stops following and is the new primary
	lost := reserve("bob", "b1") // acknowledged by the old primary alone

	// The sellers follow the failover to the replica.
	ns := NewStore(replica.Client(), "eu")
	if c := mustCounters(t, ns, "f"); !c.Stopped() || c.Reserved != 1 {
		t.Fatalf("new primary %+v: want stopped, holding ann's reservation only", c)
	}
	for _, tc := range []struct {
		what string
		err  error
	}{
		{"confirm the lost reservation", ns.Confirm(ctx, "f", lost.ID, t0)},
		{"cancel the lost reservation", ns.Cancel(ctx, "f", lost.ID, t0)},
		{"confirm the kept reservation", ns.ConfirmPaid(ctx, "f", kept.ID, t0, "pay-1")},
		{"cancel the kept reservation", ns.Cancel(ctx, "f", kept.ID, t0)},
	} {
		if !errors.Is(tc.err, quota.ErrHalted) {
			t.Errorf("%s on a primary not reconciled: %v, want quota.ErrHalted", tc.what, tc.err)
		}
	}
	// Nothing expires or is extended either: a sweeper on a primary not
	// reconciled would hand back to stock a unit the lost writes had sold.
	late := time.UnixMilli(max(kept.ExpiresAt, lost.ExpiresAt)).Add(time.Hour)
	if ids, err := ns.Expire(ctx, "f", late, 10); err != nil || len(ids) != 0 {
		t.Errorf("expire on a primary not reconciled: %v %v, want nothing expired", ids, err)
	}
	if _, err := ns.Extend(ctx, "f", kept.ID, late, late); !errors.Is(err, quota.ErrHalted) {
		t.Errorf("extend on a primary not reconciled: %v, want quota.ErrHalted", err)
	}
	if c := mustCounters(t, ns, "f"); c.Sold != 0 || c.Reserved != 1 {
		t.Fatalf("counters %+v after refused confirms, cancels, expiry and extension: want nothing changed", c)
	}

	// The agent reconciles: halt, put back what the order store knows,
	// recount, resume under a new epoch on this primary.
	const fence = 2
	if err := ns.SetHalted(ctx, "f", fence, true); err != nil {
		t.Fatal(err)
	}
	words, err := ns.Restore(ctx, "f", fence, []Restored{{ID: lost.ID, User: "bob", RequestID: "b1", State: quota.Active,
		ExpiresAt: lost.ExpiresAt, CreatedAt: t0.UnixMilli()}})
	if err != nil || len(words) != 1 || words[0] != RestoreCreated {
		t.Fatalf("restore: %v %v", words, err)
	}
	if _, err := ns.Recount(ctx, "f", fence); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Resume(ctx, "f", fence, 2, mustCounters(t, ns, "f").Primary, 10); err != nil {
		t.Fatal(err)
	}
	if err := ns.Confirm(ctx, "f", lost.ID, t0); err != nil {
		t.Fatalf("confirm the restored reservation: %v", err)
	}
	if err := ns.Cancel(ctx, "f", kept.ID, t0); err != nil {
		t.Fatalf("cancel the kept reservation: %v", err)
	}
	if c := mustCounters(t, ns, "f"); c.Stopped() || c.Sold != 1 || c.Reserved != 0 {
		t.Fatalf("counters %+v after the reconciliation: want 1 sold, none reserved", c)
	}
}
