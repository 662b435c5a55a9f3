package coordinator

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// runLoop is the leader's rebalance loop. It returns when ctx ends or a
// write finds the fence gone. It steps every Interval, and at once on any
// report: agents write one the moment their region turns low (and with
// every ack), and a dry region must be answered on the event, not on the
// next tick. Reports are coalesced by the agents, so this is a handful of
// ticks a second, not one per purchase.
func (c *Coordinator) runLoop(ctx context.Context, f fence) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	watch := func() clientv3.WatchChan {
		return c.cli.Watch(wctx, c.keys.Reports(), clientv3.WithPrefix())
	}
	events := watch()
	for {
		if err := c.tick(ctx, f); errors.Is(err, ErrDeposed) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if events == nil {
				events = watch() // broken meanwhile: the ticks went on
			}
		case wr, ok := <-events:
			if !ok || wr.Err() != nil {
				events = nil
			}
		}
	}
}

// tick reads everything once and steps every sale.
func (c *Coordinator) tick(ctx context.Context, f fence) error {
	snap, err := c.readSnapshot(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("rebalance tick: read", "err", err)
		}
		return err
	}
	c.m.ticks.Inc()
	now := c.cfg.Now()
	learning := c.updateLearning(f, snap, now)
	for _, id := range snap.saleIDs() {
		var sold int64
		for _, rep := range snap.reports[id] {
			sold += rep.Sold
		}
		c.m.sold.WithLabelValues(id).Set(float64(sold))
		err := c.stepSale(ctx, f, snap, id, now, learning)
		switch {
		case err == nil:
		case errors.Is(err, ErrDeposed):
			return err
		case errors.Is(err, ErrConflict):
			// An operator call changed the allocation after our read; the
			// next tick decides again from what etcd holds.
			c.log.Debug("rebalance tick: allocation changed under us", "sale", id)
		default:
			c.m.tickErrs.Inc()
			c.log.Error("rebalance tick", "sale", id, "err", err)
		}
	}
	return nil
}

// updateLearning ends learning mode once every live region has written a
// report since this leader was elected (a mod revision above electedRev),
// or the grace period has passed. Until then the leader grants nothing: its
// picture of sold and demand is older than its election.
func (c *Coordinator) updateLearning(f fence, snap *snapshot, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lead
	if l == nil || l.fence != f {
		return true
	}
	if !l.learning {
		return false
	}
	if quota.Learned(now.UnixMilli(), l.since.UnixMilli(), c.cfg.LearningGrace.Milliseconds(), l.electedRev, liveRegions(snap), snap.reportRev) {
		l.learning = false
		c.m.learning.Set(0)
		c.log.Info("learning mode over", "after", now.Sub(l.since).Round(time.Millisecond))
	}
	return l.learning
}

func (c *Coordinator) isLearning() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lead != nil && c.lead.learning
}

// liveRegions are the regions whose agent holds a lease: a RegionInfo or
// any report exists.
func liveRegions(snap *snapshot) []string {
	seen := map[string]bool{}
	var out []string
	for r := range snap.regions {
		seen[r] = true
		out = append(out, r)
	}
	for r := range snap.reportRev {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// stepSale runs the leader's round for one sale (quota.Round: the reports
// and their acks, then the plan) and writes the allocation if a counter, a
// pending release or the release sequence changed, comparing the reports
// its acks came from.
func (c *Coordinator) stepSale(ctx context.Context, f fence, snap *snapshot, id string, now time.Time, learning bool) error {
	doc, ok := snap.allocs[id]
	if !ok {
		c.log.Warn("sale without allocation", "sale", id)
		return nil
	}
	c.allocMu.Lock()
	defer c.allocMu.Unlock()
	v := &saleView{spec: snap.sales[id], doc: doc, reports: snap.reports[id], revs: snap.revs[id], live: snap.regions}
	a := cloneAlloc(doc.alloc)
	rd, err := a.Round(doc.alloc, storedReports(v), c.situation(v, now, learning), quota.RoundBugs{})
	c.taken(id, v, rd)
	if err != nil || !rd.Changed {
		return err
	}
	if _, err := c.writeAlloc(ctx, f, a, doc.modRev, v.ackCmps); err != nil {
		return err
	}
	p := fromActions(rd.Actions, rd.Note)
	c.countPlan(p)
	if !p.empty() || p.note != "" {
		c.log.Info("allocation written", "sale", id, "grants", p.grants, "releases", p.releases, "note", p.note, "sumNet", a.SumNet(), "total", a.Total)
	}
	return nil
}

// situation is what quota.Decide needs besides the allocation: the sale's
// window and state, learning mode, and which regions are alive (a region
// without a report key has no lease).
func (c *Coordinator) situation(v *saleView, now time.Time, learning bool) quota.Situation {
	s := quota.Situation{
		Now:      now.UnixMilli(),
		StartsAt: v.spec.StartsAt.UnixMilli(),
		Paused:   v.spec.State == layout.SalePaused,
		Ended:    v.spec.State == layout.SaleEnded,
		Learning: learning,
		Live:     liveOf(v.reports),
		Timing: quota.Timing{SplitLeadMs: c.cfg.SplitLead.Milliseconds(), SweepBeforeMs: c.cfg.SweepBefore.Milliseconds(),
			DemandLagMs: c.cfg.DemandLag.Milliseconds()},
	}
	if !v.spec.EndsAt.IsZero() {
		s.EndsAt = v.spec.EndsAt.UnixMilli()
	}
	return s
}

// liveOf names the regions with a report key: those whose agent holds a
// lease.
func liveOf(reports map[string]layout.RegionReport) map[string]bool {
	live := make(map[string]bool, len(reports))
	for r := range reports {
		live[r] = true
	}
	return live
}
