package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/orders"
	"flashsale/regional/redisstore"
)

// TestLostWritesRestoredFromOrderStore: ten buyers in eu, four paid and six
// holding live reservations, drained into SQLite; then Redis loses
// everything (FLUSHALL). With the order store as its witness
// (orders.Witness, as cmd/flashsale and the dev stack wire it) the agent's
// reconcile puts every reservation back before selling again: no buyer can
// buy a second unit, a retried requestId answers its reservation, a live
// one can still be paid. The control without the witness shows the hole it
// closes: etcd's floors bring sold back but not who holds what, and every
// buyer buys again.
func TestLostWritesRestoredFromOrderStore(t *testing.T) {
	for _, withWitness := range []bool{true, false} {
		t.Run(fmt.Sprintf("witness=%t", withWitness), func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, nil, "eu")
			sql, err := orders.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "orders.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sql.Close() })
			cfg := w.config("eu")
			if withWitness {
				cfg.Witness = orders.NewWitness(w.store["eu"], sql, cfg.Logger)
			}
			a := w.start(cfg, nil)
			w.newSale("s1", 1000, map[string]int64{"eu": 100})
			st := w.store["eu"]

			epoch := func() int64 {
				var c redisstore.Counters
				waitFor(t, "eu selling", func() bool {
					c = w.counters("eu", "s1")
					return c.Epoch > 0 && !c.Stopped() && c.GrantedSeen == 100
				})
				return c.Epoch
			}
			e := epoch()
			ids := make([]string, 10)
			for i := range ids {
				res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: fmt.Sprintf("b%d", i), RequestID: fmt.Sprintf("req-b%d", i),
					Now: time.Now(), TTL: time.Hour, PerUserLimit: 1, Epoch: e})
				if err != nil || res.Outcome != quota.Reserved {
					t.Fatalf("reserve b%d: %+v %v", i, res, err)
				}
				ids[i] = res.Reservation.ID
			}
			for _, id := range ids[:4] {
				if err := st.Confirm(ctx, "s1", id, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			w.waitReport("eu", "s1", "sold 4", func(r layout.RegionReport) bool { return r.Sold == 4 })
			if _, err := orders.Replay(ctx, w.rdb["eu"], sql, "s1"); err != nil {
				t.Fatal(err)
			}

			if err := w.rdb["eu"].FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "lost writes detected", func() bool { return value(a.m.lostWrites) >= 1 })
			e2 := epoch()
			if e2 <= e {
				t.Fatalf("epoch after reconcile %d, want above %d", e2, e)
			}
			c := w.counters("eu", "s1")
			if c.Sold != 4 {
				t.Errorf("sold %d after reconcile, want 4", c.Sold)
			}

			twice := 0
			for i := range ids {
				res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: fmt.Sprintf("b%d", i), RequestID: fmt.Sprintf("again-b%d", i),
					Now: time.Now(), TTL: time.Hour, PerUserLimit: 1, Epoch: e2})
				if err != nil {
					t.Fatal(err)
				}
				if res.Outcome == quota.Reserved {
					twice++
				}
			}
			if !withWitness {
				if twice == 0 {
					t.Fatal("without the witness no buyer bought twice: the control shows nothing")
				}
				t.Logf("without the witness %d of 10 buyers bought a second unit", twice)
				return
			}
			if twice != 0 {
				t.Fatalf("%d buyers bought a second unit after the reconcile", twice)
			}
			if c.Reserved != 6 {
				t.Errorf("reserved %d after reconcile, want the 6 live reservations", c.Reserved)
			}
			res, err := st.Reserve(ctx, "s1", redisstore.ReserveRequest{User: "b5", RequestID: "req-b5", Now: time.Now(), TTL: time.Hour, PerUserLimit: 1, Epoch: e2})
			if err != nil || res.Outcome != quota.Duplicate || res.Reservation.ID != ids[5] {
				t.Errorf("retry of b5's request: %+v %v, want its reservation %s", res, err, ids[5])
			}
			if err := st.Confirm(ctx, "s1", ids[6], time.Now()); err != nil {
				t.Errorf("paying a restored live reservation: %v", err)
			}
		})
	}
}
