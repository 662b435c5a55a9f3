package regional

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"flashsale/internal/etcdtest"
	"flashsale/quota/layout"
)

func TestSaleWatcherFollowsEtcd(t *testing.T) {
	e := etcdtest.Start(t)
	cli := etcdtest.Client(t, e)
	keys := layout.Keys{Prefix: "/fs"}
	ctx := context.Background()
	put := func(spec layout.SaleSpec) {
		t.Helper()
		b, _ := json.Marshal(spec)
		if _, err := cli.Put(ctx, keys.Sale(spec.ID), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	spec := layout.SaleSpec{ID: "phone", Total: 10, PerUserLimit: 1, StartsAt: now, EndsAt: now.Add(time.Hour),
		Regions: []layout.RegionSpec{{Name: "us"}, {Name: "eu"}}, State: layout.SaleActive}
	put(spec)
	put(layout.SaleSpec{ID: "elsewhere", Total: 5, PerUserLimit: 1, StartsAt: now, EndsAt: now.Add(time.Hour),
		Regions: []layout.RegionSpec{{Name: "ap"}}, State: layout.SaleActive})

	sales := NewSales()
	w := NewSaleWatcher(cli, "/fs", "us", sales, nil)
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	<-w.Synced()
	if sales.Get("phone") == nil {
		t.Fatal("listed sale missing after sync")
	}
	if sales.Get("elsewhere") != nil {
		t.Fatal("a sale without region us is served in us")
	}

	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	spec.State = layout.SalePaused
	put(spec)
	eventually("the paused state", func() bool { return sales.Get("phone").Spec().State == layout.SalePaused })

	if _, err := cli.Delete(ctx, keys.Sale("phone")); err != nil {
		t.Fatal(err)
	}
	eventually("the removal", func() bool { return sales.Get("phone") == nil })

	// Garbage in etcd is ignored, not served.
	if _, err := cli.Put(ctx, keys.Sale("junk"), "{not json"); err != nil {
		t.Fatal(err)
	}
	spec.ID = "later"
	put(spec)
	eventually("a sale written after the junk", func() bool { return sales.Get("later") != nil })
	if sales.Get("junk") != nil {
		t.Fatal("undecodable spec served")
	}
}
