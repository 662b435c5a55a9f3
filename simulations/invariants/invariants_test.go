package invariants

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"flashsale/internal/etcdtest"
	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// The checker passes a consistent deployment and catches each invariant
// broken on purpose (negative controls).
func TestCheckerCatchesEachViolation(t *testing.T) {
	ctx := context.Background()
	cli := etcdtest.Client(t, etcdtest.Start(t))
	keys := layout.Keys{Prefix: "/fs"}
	us, eu := redistest.Start(t).Client(), redistest.Start(t).Client()
	regions := []Region{{"us", us}, {"eu", eu}}

	a := quota.NewAllocation("s", 10, "us", "eu")
	for _, g := range []quota.Grant{{Region: "us", Units: 6}, {Region: "eu", Units: 4}} {
		if err := a.Grant(g.Region, g.Units); err != nil {
			t.Fatal(err)
		}
	}
	writeAlloc := func(a *quota.Allocation) {
		b, _ := json.Marshal(a)
		if _, err := cli.Put(ctx, keys.Alloc("s"), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	writeAlloc(a)
	spec, _ := json.Marshal(layout.SaleSpec{ID: "s", Total: 10, PerUserLimit: 1})
	cli.Put(ctx, keys.Sale("s"), string(spec))

	stores := map[string]*redisstore.Store{"us": redisstore.NewStore(us, "us"), "eu": redisstore.NewStore(eu, "eu")}
	for name, st := range stores {
		if err := st.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ApplyGrant(ctx, "s", 1, a.Regions[name].Net()); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	reserve := func(region, user, req string) quota.Reservation {
		t.Helper()
		r, err := stores[region].Reserve(ctx, "s", redisstore.ReserveRequest{User: user, RequestID: req, Now: now, TTL: time.Minute, PerUserLimit: 1})
		if err != nil || r.Outcome != quota.Reserved {
			t.Fatalf("reserve %s in %s: %v %v", user, region, r.Outcome, err)
		}
		return r.Reservation
	}
	first := reserve("us", "alice", "r1")
	reserve("eu", "bob", "r2")
	if err := stores["us"].Confirm(ctx, "s", first.ID, now); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, cli, "/fs", regions); err != nil {
		t.Fatalf("consistent deployment reported: %v", err)
	}

	ledger, users := layout.SaleKey("s", "ledger"), layout.SaleKey("s", "users")
	cases := []struct {
		name  string
		want  string
		spoil func()
		mend  func()
	}{
		{"oversell", "I1", func() { us.HIncrBy(ctx, ledger, "sold", 10) }, func() { us.HIncrBy(ctx, ledger, "sold", -10) }},
		{"ceiling above net grant", "I2", func() { eu.HIncrBy(ctx, ledger, "granted_seen", 1) }, func() { eu.HIncrBy(ctx, ledger, "granted_seen", -1) }},
		{"sum of net grants above total", "I2: sum", func() { a.Regions["us"].Granted += 5; writeAlloc(a) }, func() { a.Regions["us"].Granted -= 5; writeAlloc(a) }},
		// The coordinator counts a release the region's Redis never made.
		{"released_local below released_r", "I2: sale s region us", func() { a.Regions["us"].Released++; writeAlloc(a) }, func() { a.Regions["us"].Released--; writeAlloc(a) }},
		{"sold without its confirmed reservation", "I4: sale s region us: counters reserved 0 sold 2", func() { us.HIncrBy(ctx, ledger, "sold", 1) }, func() { us.HIncrBy(ctx, ledger, "sold", -1) }},
		{"per-user hash off its reservations", "per-user hash disagrees", func() { eu.HIncrBy(ctx, users, "bob", 1) }, func() { eu.HIncrBy(ctx, users, "bob", -1) }},
		{"user twice across regions", "I3", func() { reserve("eu", "alice", "r3") }, func() {}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.spoil()
			err := Check(ctx, cli, "/fs", regions)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("violation not caught: err = %v, want %q", err, c.want)
			}
			c.mend()
		})
	}
	// The last case left alice with a unit in each region; the counters
	// still add up, so only I3 is reported. Now break the bookkeeping.
	us.HIncrBy(ctx, ledger, "reserved", 1)
	if err := Check(ctx, cli, "/fs", regions); err == nil || !strings.Contains(err.Error(), "I4") {
		t.Fatalf("counter drift not caught: %v", err)
	}
}
