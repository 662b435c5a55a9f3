package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"flashsale/coordinator/api"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// simRegion plays a region agent and its Redis in memory: it max-merges
// grants, runs each release once (giving what is unused), sells at a rate
// while stock lasts, and reports on its lease when something changed.
type simRegion struct {
	*fakeRegion
	rate                             float64 // units sold per second while stock lasts
	grantedSeen, releasedLocal, sold int64
	lastRelease                      string
	carry                            float64
	last                             quota.Report
	lastID                           string
}

func (r *simRegion) step(a *quota.Allocation, dt time.Duration, sale string) {
	ra := a.Regions[r.name]
	r.grantedSeen = max(r.grantedSeen, ra.Granted)
	avail := r.grantedSeen - r.releasedLocal - r.sold
	if p := ra.Pending; p != nil && p.ID != r.lastRelease {
		m := min(p.Units, avail)
		r.releasedLocal += m
		r.lastRelease = p.ID
		avail -= m
	}
	r.carry += r.rate * dt.Seconds()
	n := min(int64(r.carry), avail)
	r.carry -= float64(int64(r.carry))
	r.sold += n
	rep := quota.Report{GrantedSeen: r.grantedSeen, ReleasedLocal: r.releasedLocal, Sold: r.sold, Demand: r.rate}
	if rep == r.last && r.lastRelease == r.lastID {
		return // agents skip unchanged reports
	}
	r.last, r.lastID = rep, r.lastRelease
	rep.At = time.Now().UnixMilli()
	r.report(sale, layout.RegionReport{Report: rep, ReleaseID: r.lastRelease})
}

// Three regions sell a 5,000-unit sale; halfway through, demand moves from
// eu to ap. Nothing oversells, the stock sells out but for what idle
// regions keep, and the test reports etcd writes per 1,000 purchases and
// how long the coordinator took to follow the demand shift.
func TestThreeRegionLoadWritesPerThousandPurchases(t *testing.T) {
	_, cli, c := startLeader(t, func(c *Config) { c.Interval = 50 * time.Millisecond })
	regions := []*api.RegionSpec{{Name: "eu", Weight: 1}, {Name: "us", Weight: 1}, {Name: "ap", Weight: 1}}
	const total = 5000
	if _, err := dial(t, c.Addr()).CreateSale(authed(t.Context()), &api.CreateSaleRequest{Sale: testSale("s1", total, regions...)}); err != nil {
		t.Fatal(err)
	}
	sims := map[string]*simRegion{
		"eu": {fakeRegion: newFakeRegion(t, cli, "eu"), rate: 1500},
		"us": {fakeRegion: newFakeRegion(t, cli, "us"), rate: 1000},
		"ap": {fakeRegion: newFakeRegion(t, cli, "ap"), rate: 300},
	}
	waitSplit(t, cli, "s1")
	writesBefore := counterValue(c.m.writes.WithLabelValues("alloc"))

	var mu sync.Mutex
	var shifted time.Time
	var apNetAtShift int64
	var reaction time.Duration
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := time.Now()
		for ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			resp, err := cli.Get(ctx, layout.Keys{Prefix: layout.DefaultPrefix}.Alloc("s1"))
			if err != nil || len(resp.Kvs) == 0 {
				continue
			}
			a, err := layout.DecodeAlloc(resp.Kvs[0].Key, resp.Kvs[0].Value)
			if err != nil {
				t.Error(err)
				return
			}
			now := time.Now()
			mu.Lock()
			var sold int64
			for _, name := range []string{"ap", "eu", "us"} {
				sims[name].step(a, now.Sub(last), "s1")
				sold += sims[name].sold
			}
			if sold > total {
				t.Errorf("I1: sold %d > total %d", sold, total)
			}
			if shifted.IsZero() && sold >= total/2 {
				shifted, apNetAtShift = now, a.Regions["ap"].Net()
				sims["ap"].rate, sims["eu"].rate = 1500, 0
			} else if !shifted.IsZero() && reaction == 0 && a.Regions["ap"].Net() > apNetAtShift {
				reaction = now.Sub(shifted)
			}
			mu.Unlock()
			last = now
		}
	}()
	soldNow := func() (s int64) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range sims {
			s += r.sold
		}
		return s
	}
	// Idle regions keep MinKeep units each for late buyers while stock is
	// ample: that is all that may stay unsold.
	minKeep := c.cfg.Policy.MinKeep
	waitFor(t, "the sale to sell out", func() bool { return soldNow() >= total-3*minKeep })
	cancel()
	<-done

	a, _ := readAlloc(t, cli, "s1")
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
	sold := soldNow()
	writes := counterValue(c.m.writes.WithLabelValues("alloc")) - writesBefore
	if reaction == 0 {
		t.Fatal("the coordinator never followed the demand shift to ap")
	}
	t.Logf("sold %d of %d; %v alloc writes after the split = %.1f etcd writes per 1,000 purchases; demand shift -> ap's grant rose after %v (loop interval %v)",
		sold, total, writes, writes*1000/float64(sold), reaction.Round(time.Millisecond), c.cfg.Interval)
}
