package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// maxOpsPerTxn stays below etcd's default --max-txn-ops (128).
const maxOpsPerTxn = 100

// term is one election won: everything the agent does as leader, with the
// election revision as its fence. A term is driven by one goroutine.
type term struct {
	a     *Agent
	sess  *concurrency.Session
	key   string // the election key; its create revision is the fence
	fence int64
	sales map[string]*saleState
	// infoAt is when the region info was last checked; info what was
	// last written.
	infoAt time.Time
	info   *layout.RegionInfo
}

// saleState is what the term knows about one sale.
type saleState struct {
	spec  *layout.SaleSpec
	alloc *quota.Allocation
	// floor holds the highest sold, released_local and granted_seen etcd
	// has heard from this region: reports (this term's, and a predecessor's
	// read at startup) and the allocation's durable Released and Report.
	// Redis below it lost writes.
	floor quota.Report
	// reported: a report key for this sale may exist in etcd.
	reported  bool
	last      *layout.RegionReport // the last report this term wrote
	lastWrite time.Time
	ackID     string // the release id this term ran and acknowledges in its reports
	lastErr   string // the last error logged, so a down Redis is logged once, not every tick
	lastAvail int64  // the region's available units when the last report was written
	// others holds the other regions' live reports (etcd, on their agents'
	// leases), from which the sale view copied into Redis is made.
	others map[string]quota.Report
	view   redisstore.SaleView // the view last written to Redis
}

func (s *saleState) region(name string) *quota.RegionAlloc {
	if s.alloc == nil {
		return nil
	}
	return s.alloc.Regions[name]
}

func raiseFloor(f *quota.Report, r quota.Report) {
	f.Sold = max(f.Sold, r.Sold)
	f.ReleasedLocal = max(f.ReleasedLocal, r.ReleasedLocal)
	f.GrantedSeen = max(f.GrantedSeen, r.GrantedSeen)
}

// lostWrites reports whether Redis holds less than etcd heard from it. Sold,
// released_local and granted_seen only grow in Redis, so any of them below
// a report means Redis forgot acknowledged writes.
func lostWrites(c redisstore.Counters, f quota.Report) bool {
	return c.Sold < f.Sold || c.ReleasedLocal < f.ReleasedLocal || c.GrantedSeen < f.GrantedSeen
}

func (t *term) run(ctx context.Context) error {
	if err := t.register(ctx); err != nil {
		return err
	}
	t.a.fence.Store(t.fence)
	t.a.m.leader.Set(1)
	dctx, cancel := t.op(ctx)
	if err := t.a.store.Durability(dctx); err != nil {
		// Not fatal: a region may run a replica with WAIT instead. Lost
		// writes are still caught below, by comparing with etcd.
		t.a.log.Warn("redis may lose acknowledged writes on a crash", "err", err)
	}
	cancel()
	for {
		rev, err := t.load(ctx)
		if err == nil {
			err = t.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errDeposed) {
			return err
		}
		t.a.log.Warn("re-reading etcd state", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(t.a.cfg.RetryInterval):
		}
	}
}

func (t *term) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.a.cfg.OpTimeout)
}

// ifLeader is the compare every etcd write of the term carries.
func (t *term) ifLeader() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.fence)
}

func (t *term) commit(ctx context.Context, what string, ops []clientv3.Op) error {
	octx, cancel := t.op(ctx)
	defer cancel()
	resp, err := t.a.cli.Txn(octx).If(t.ifLeader()).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("write %s: election key %s no longer at revision %d: %w", what, t.key, t.fence, errDeposed)
	}
	return nil
}

// register publishes how the region is reached, its fence and its Redis
// health (for the coordinator's readiness), on the lease.
func (t *term) register(ctx context.Context) error {
	c := t.a.cfg
	octx, cancel := t.op(ctx)
	durable := t.a.store.Durability(octx) == nil
	loaded, _ := t.a.store.ScriptsLoaded(octx)
	if !loaded { // a restarted Redis forgets them; EVALSHA would reload them one by one
		loaded = t.a.store.Load(octx) == nil
	}
	cancel()
	now := c.Now()
	info := layout.RegionInfo{Name: c.Region, Endpoint: c.Endpoint, RedisAddr: c.RedisAddr, Fence: t.fence,
		Durable: durable, ScriptsLoaded: loaded, CheckedAt: now.UnixMilli()}
	if t.info != nil && t.info.Durable == durable && t.info.ScriptsLoaded == loaded {
		t.infoAt = now // unchanged: the key lives on the lease, no write needed
		return nil
	}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := t.commit(ctx, "region info", []clientv3.Op{
		clientv3.OpPut(t.a.keys.Region(c.Region), string(b), clientv3.WithLease(t.sess.Lease())),
	}); err != nil {
		return err
	}
	t.infoAt, t.info = now, &info
	return nil
}

// reregister checks the region's Redis every ReportRefresh and rewrites the
// region info when its health changed, so readiness sees a Redis that lost
// durability or its scripts (and etcd is not written when nothing did).
func (t *term) reregister(ctx context.Context) error {
	if t.a.cfg.Now().Sub(t.infoAt) < t.a.cfg.ReportRefresh {
		return nil
	}
	err := t.register(ctx)
	if err != nil && !errors.Is(err, errDeposed) {
		t.a.log.Warn("refreshing region info failed; retrying next tick", "err", err)
		return nil
	}
	return err
}

// load reads sales, allocations and this region's reports at one revision,
// before the term touches Redis: the reports are the floors that reveal a
// Redis that lost writes. It then brings every sale's Redis in line and
// returns the revision to watch from.
func (t *term) load(ctx context.Context) (int64, error) {
	k := t.a.keys
	octx, cancel := t.op(ctx)
	resp, err := t.a.cli.Txn(octx).Then(
		clientv3.OpGet(k.Allocs(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Sales(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Reports(), clientv3.WithPrefix()),
	).Commit()
	cancel()
	if err != nil {
		return 0, fmt.Errorf("read etcd state: %w", err)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		sale := layout.Last(string(kv.Key))
		seen[sale] = true
		t.putAlloc(sale, kv.Value)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		sale := layout.Last(string(kv.Key))
		seen[sale] = true
		t.putSale(sale, kv.Value)
	}
	for _, s := range t.sales {
		s.others = nil // re-read below: a report gone meanwhile is a region gone
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		region, sale, rep, ok := t.parseReport(kv.Key, kv.Value)
		if !ok {
			continue
		}
		if region != t.a.cfg.Region {
			t.sale(sale).putOther(region, &rep.Report)
			continue
		}
		seen[sale] = true
		s := t.sale(sale)
		s.reported = true
		raiseFloor(&s.floor, rep.Report)
	}
	// A re-read after a broken watch drops what vanished meanwhile.
	for sale, s := range t.sales {
		if !seen[sale] {
			s.alloc, s.spec = nil, nil
		}
	}
	if err := t.sync(ctx, t.names()); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// parseReport decodes a report key (<prefix>/reports/<region>/<sale>) and
// value; a malformed one is logged and skipped (another agent wrote it).
func (t *term) parseReport(key, value []byte) (region, sale string, rep layout.RegionReport, ok bool) {
	if value == nil { // a deletion
		region, sale, ok = t.a.keys.ReportKey(string(key))
		return region, sale, rep, ok
	}
	rep, err := t.a.keys.DecodeReport(key, value)
	if err != nil {
		t.a.log.Error("unreadable region report in etcd; ignored", "err", err)
		return "", "", rep, false
	}
	return rep.Region, rep.Sale, rep, true
}

// putOther records another region's live report (nil: it is gone).
func (s *saleState) putOther(region string, rep *quota.Report) {
	if rep == nil {
		delete(s.others, region)
		return
	}
	if s.others == nil {
		s.others = map[string]quota.Report{}
	}
	s.others[region] = *rep
}

func (t *term) sale(name string) *saleState {
	s, ok := t.sales[name]
	if !ok {
		s = &saleState{}
		t.sales[name] = s
	}
	return s
}

func (t *term) names() []string {
	names := make([]string, 0, len(t.sales))
	for n := range t.sales {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (t *term) putAlloc(sale string, value []byte) {
	a, err := layout.DecodeAlloc([]byte(t.a.keys.Alloc(sale)), value)
	if err != nil {
		t.a.log.Error("unreadable allocation in etcd; ignored", "err", err)
		return
	}
	s := t.sale(sale)
	s.alloc = a
	if ra := s.region(t.a.cfg.Region); ra != nil {
		// Released is durable and only grows on an ack of ours, so Redis
		// holds at least that much released_local.
		raiseFloor(&s.floor, quota.Report{ReleasedLocal: ra.Released})
		if ra.Report != nil {
			raiseFloor(&s.floor, *ra.Report)
		}
	}
}

func (t *term) putSale(sale string, value []byte) {
	spec, err := layout.DecodeSale([]byte(t.a.keys.Sale(sale)), value)
	if err != nil {
		t.a.log.Error("unreadable sale in etcd; ignored", "err", err)
		return
	}
	t.sale(sale).spec = &spec
}

// follow watches allocations and sales from rev and reconciles on every
// change and every ReportInterval. It returns when the watch breaks (the
// caller re-reads), ctx ends, or the term is deposed.
func (t *term) follow(ctx context.Context, rev int64) error {
	k := t.a.keys
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	allocs := t.a.cli.Watch(wctx, k.Allocs(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	sales := t.a.cli.Watch(wctx, k.Sales(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	reports := t.a.cli.Watch(wctx, k.Reports(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	tick := time.NewTicker(t.a.cfg.ReportInterval)
	defer tick.Stop()
	for {
		var changed []string
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-allocs:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch allocations: %w", err)
			}
			for _, ev := range wr.Events {
				sale := layout.Last(string(ev.Kv.Key))
				if ev.Type == clientv3.EventTypeDelete {
					t.sale(sale).alloc = nil
				} else {
					t.putAlloc(sale, ev.Kv.Value)
				}
				changed = append(changed, sale)
			}
		case wr, ok := <-sales:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch sales: %w", err)
			}
			for _, ev := range wr.Events {
				sale := layout.Last(string(ev.Kv.Key))
				if ev.Type == clientv3.EventTypeDelete {
					t.sale(sale).spec = nil
				} else {
					t.putSale(sale, ev.Kv.Value)
				}
				changed = append(changed, sale)
			}
		case wr, ok := <-reports:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch reports: %w", err)
			}
			for _, ev := range wr.Events {
				value := ev.Kv.Value
				if ev.Type == clientv3.EventTypeDelete {
					value = nil
				}
				region, sale, rep, ok := t.parseReport(ev.Kv.Key, value)
				if !ok || region == t.a.cfg.Region {
					continue // our own: we wrote it
				}
				if value == nil {
					t.sale(sale).putOther(region, nil)
				} else {
					t.sale(sale).putOther(region, &rep.Report)
				}
				changed = append(changed, sale)
			}
		case <-tick.C:
			changed = t.names()
			if err := t.reregister(ctx); err != nil {
				return err
			}
		}
		if err := t.sync(ctx, changed); err != nil {
			return err
		}
	}
}

func watchErr(ok bool, wr clientv3.WatchResponse) error {
	if !ok {
		return errors.New("watch channel closed")
	}
	return wr.Err()
}

// sync reconciles the named sales and writes their due reports in one
// transaction. Redis or etcd errors are logged and retried on the next tick;
// only deposition (or ctx) ends the term.
func (t *term) sync(ctx context.Context, names []string) error {
	var reps []*layout.RegionReport
	var gone []string
	now := t.a.cfg.Now()
	done := make(map[string]bool, len(names))
	for _, name := range names {
		s, ok := t.sales[name]
		if !ok || done[name] {
			continue
		}
		done[name] = true
		if s.region(t.a.cfg.Region) == nil {
			if s.reported {
				gone = append(gone, name)
			} else if s.alloc == nil && s.spec == nil {
				delete(t.sales, name)
			}
			continue
		}
		rep, err := t.reconcile(ctx, name, s, now)
		if err != nil {
			if errors.Is(err, errDeposed) || ctx.Err() != nil {
				return err
			}
			t.a.m.errors.Inc()
			if msg := err.Error(); msg != s.lastErr {
				s.lastErr = msg
				t.a.log.Warn("reconcile sale; retrying every tick", "sale", name, "err", err)
			}
			continue
		}
		if s.lastErr != "" {
			s.lastErr = ""
			t.a.log.Info("reconcile sale: working again", "sale", name)
		}
		if rep != nil {
			reps = append(reps, rep)
		}
	}
	if err := t.writeReports(ctx, reps, now); err != nil {
		if errors.Is(err, errDeposed) || ctx.Err() != nil {
			return err
		}
		t.a.m.errors.Inc()
		t.a.log.Warn("write reports; retrying next tick", "err", err)
	}
	if err := t.dropReports(ctx, gone); err != nil {
		if errors.Is(err, errDeposed) || ctx.Err() != nil {
			return err
		}
		t.a.log.Warn("delete reports of sales this region left", "err", err)
	}
	return nil
}

// reconcile brings one sale's Redis in line with etcd and returns the
// report to write, or nil when the last one still stands. Order matters:
// lost writes are repaired before a grant can raise the ceiling, and a
// release runs after the grant it may depend on.
func (t *term) reconcile(ctx context.Context, sale string, s *saleState, now time.Time) (*layout.RegionReport, error) {
	ra := s.region(t.a.cfg.Region)
	c, err := t.counters(ctx, sale)
	if err != nil {
		return nil, err
	}
	if c.Fence > t.fence {
		return nil, fmt.Errorf("sale %s: redis holds fence %d above ours %d: %w", sale, c.Fence, t.fence, errDeposed)
	}
	force := false
	// Halted is the agent's own flag: a Redis halted with no lost writes
	// left is a reconciliation a crash interrupted, finished here.
	if lostWrites(c, s.floor) || c.Halted {
		if c, err = t.recover(ctx, sale, s, c, now); err != nil {
			return nil, err
		}
		force = true
	}
	if c.Fence < t.fence || c.GrantedSeen < ra.Granted {
		// Also run when nothing is new: it claims the fence, so the
		// deposed predecessor's writes are refused from now on (I5).
		gs, err := t.applyGrant(ctx, sale, ra.Granted)
		if err != nil {
			return nil, err
		}
		c.GrantedSeen, c.Fence = gs, t.fence
	}
	if p := ra.Pending; p != nil && p.ID != s.ackID {
		// Idempotent per id: a repeat (this term's retry, or a successor
		// of an agent killed before its ack) returns the recorded m.
		m, rl, err := t.release(ctx, sale, p.ID, p.Units, p.Keep)
		if err != nil {
			return nil, err
		}
		t.a.log.Info("released units", "sale", sale, "release", p.ID, "asked", p.Units, "released", m, "releasedLocal", rl)
		if h := t.a.testHookAfterRelease; h != nil {
			h(ctx, sale, p.ID)
		}
		s.ackID = p.ID
		c.ReleasedLocal = max(c.ReleasedLocal, rl)
		force = true
	}
	if err := t.writeView(ctx, sale, s, now); err != nil {
		return nil, err
	}
	rep := t.report(sale, s, c, now)
	if force || t.reportDue(s, rep, c.Available(), now) {
		s.lastAvail = c.Available()
		return rep, nil
	}
	return nil, nil
}

// reportDue says whether the sale's report is worth an etcd write now.
// Reports are coalesced, one per ReportRefresh, because every report is an
// etcd write and they are most of a sale's (DESIGN §4: writes follow quota
// movement, not purchases). What cannot wait: a changed fence, ack, halt
// or released_local; demand that jumped (at least doubled, by 10/s or
// more), so the planners never take a region whose buyers just came for
// idle; and the region's need: it turned low (or dry again), so the
// coordinator hears it at once and pulls quota for it.
func (t *term) reportDue(s *saleState, rep *layout.RegionReport, avail int64, now time.Time) bool {
	old := s.last
	switch {
	case old == nil, now.Sub(s.lastWrite) >= t.a.cfg.ReportRefresh,
		old.ReleaseID != rep.ReleaseID, old.Fence != rep.Fence, old.Halted != rep.Halted,
		old.ReleasedLocal != rep.ReleasedLocal,
		rep.Demand >= 2*old.Demand+10: // buyers came: the planners must not take this region for idle
		return true
	}
	p, total := s.alloc.PolicyOf(), s.alloc.Total
	if !p.Low(avail, rep.Demand, total) {
		return false
	}
	return !p.Low(s.lastAvail, old.Demand, total) || (avail == 0 && s.lastAvail > 0) || rep.Demand > 2*old.Demand+1
}

// writeView copies what etcd says of the rest of the sale into the
// region's Redis, where sellers read it with their counters: the other
// regions' sold and reserved, from their live reports or, for a region
// without one (its agent is away), the last report the allocation kept.
// Written when it changed, and at least every ReportRefresh so its age
// tells sellers it is current.
func (t *term) writeView(ctx context.Context, sale string, s *saleState, now time.Time) error {
	v := redisstore.SaleView{Total: s.alloc.Total}
	for name, ra := range s.alloc.Regions {
		if name == t.a.cfg.Region {
			continue
		}
		rep, ok := s.others[name]
		if stored := ra.Report; stored != nil && (!ok || stored.Sold > rep.Sold) {
			rep.Sold = max(rep.Sold, stored.Sold)
			if !ok {
				rep.Reserved = stored.Reserved
			}
		}
		v.OthersSold += rep.Sold
		v.OthersReserved += rep.Reserved
	}
	same := v.Total == s.view.Total && v.OthersSold == s.view.OthersSold && v.OthersReserved == s.view.OthersReserved
	if same && now.Sub(time.UnixMilli(s.view.At)) < t.a.cfg.ReportRefresh {
		return nil
	}
	v.At = now.UnixMilli()
	octx, cancel := t.op(ctx)
	defer cancel()
	if err := fenced("write the sale view of", sale, t.a.store.SetSaleView(octx, sale, t.fence, v)); err != nil {
		return err
	}
	s.view = v
	return nil
}

// recover halts a Redis that lost writes, raises its floors to what etcd
// knows, re-applies the grant and resumes selling (DESIGN §4).
func (t *term) recover(ctx context.Context, sale string, s *saleState, c redisstore.Counters, now time.Time) (redisstore.Counters, error) {
	ra, f := s.region(t.a.cfg.Region), s.floor
	log := t.a.log.With("sale", sale,
		"redisSold", c.Sold, "redisReleasedLocal", c.ReleasedLocal, "redisGrantedSeen", c.GrantedSeen,
		"etcdSold", f.Sold, "etcdReleasedLocal", f.ReleasedLocal, "etcdGrantedSeen", f.GrantedSeen)
	if c.Halted {
		log.Warn("region halted in redis: finishing reconciliation")
	} else {
		log.Error("REDIS LOST WRITES: counters below what etcd last heard; halting the region to reconcile")
		t.a.m.lostWrites.Inc()
		if err := t.setHalted(ctx, sale, true); err != nil {
			return c, err
		}
		c.Halted = true
		// Tell the coordinator the region is halted. The report carries the
		// floors, never Redis's lower numbers, so a successor still finds them.
		if err := t.writeReports(ctx, []*layout.RegionReport{t.report(sale, s, c, now)}, now); err != nil {
			if errors.Is(err, errDeposed) {
				return c, err
			}
			log.Warn("report halted", "err", err)
		}
	}
	if err := t.raiseFloor(ctx, sale, f.ReleasedLocal, f.Sold); err != nil {
		return c, err
	}
	if _, err := t.applyGrant(ctx, sale, ra.Granted); err != nil {
		return c, err
	}
	c, err := t.counters(ctx, sale)
	if err != nil {
		return c, err
	}
	if lostWrites(c, f) {
		return c, fmt.Errorf("sale %s: redis still below etcd after raising floors (sold %d released_local %d granted_seen %d)",
			sale, c.Sold, c.ReleasedLocal, c.GrantedSeen)
	}
	if err := t.setHalted(ctx, sale, false); err != nil {
		return c, err
	}
	c.Halted = false
	log.Warn("redis reconciled with etcd; region selling again",
		"sold", c.Sold, "releasedLocal", c.ReleasedLocal, "grantedSeen", c.GrantedSeen)
	return c, nil
}

// report builds the sale's report. Its counters never go below the floor:
// while Redis is being reconciled they say what etcd already knew.
func (t *term) report(sale string, s *saleState, c redisstore.Counters, now time.Time) *layout.RegionReport {
	var demand float64
	if d := t.a.cfg.Demand; d != nil {
		demand = d(sale)
	}
	r := quota.Report{
		Sold:          c.Sold,
		Reserved:      c.Reserved,
		ReleasedLocal: c.ReleasedLocal,
		GrantedSeen:   c.GrantedSeen,
		Demand:        demand,
		At:            now.UnixMilli(),
	}
	raiseFloor(&r, s.floor)
	return &layout.RegionReport{Report: r, Region: t.a.cfg.Region, Sale: sale, ReleaseID: s.ackID, Fence: t.fence, Halted: c.Halted}
}

// writeReports puts reports on the term's lease, fenced by the election key.
func (t *term) writeReports(ctx context.Context, reps []*layout.RegionReport, now time.Time) error {
	for len(reps) > 0 {
		batch := reps[:min(len(reps), maxOpsPerTxn)]
		reps = reps[len(batch):]
		ops := make([]clientv3.Op, 0, len(batch))
		for _, r := range batch {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(t.a.keys.Report(r.Region, r.Sale), string(b), clientv3.WithLease(t.sess.Lease())))
		}
		if err := t.commit(ctx, "reports", ops); err != nil {
			return err
		}
		t.a.m.reportWrites.Add(float64(len(batch)))
		for _, r := range batch {
			s := t.sale(r.Sale)
			s.last, s.lastWrite, s.reported = r, now, true
			raiseFloor(&s.floor, r.Report)
		}
	}
	return nil
}

// dropReports deletes the reports of sales this region no longer takes part in.
func (t *term) dropReports(ctx context.Context, sales []string) error {
	for len(sales) > 0 {
		batch := sales[:min(len(sales), maxOpsPerTxn)]
		sales = sales[len(batch):]
		ops := make([]clientv3.Op, 0, len(batch))
		for _, sale := range batch {
			ops = append(ops, clientv3.OpDelete(t.a.keys.Report(t.a.cfg.Region, sale)))
		}
		if err := t.commit(ctx, "report deletions", ops); err != nil {
			return err
		}
		for _, sale := range batch {
			s := t.sales[sale]
			s.reported, s.last = false, nil
			if s.alloc == nil && s.spec == nil {
				delete(t.sales, sale)
			}
		}
	}
	return nil
}

// The Redis calls of the term, each carrying its fence. A stale fence means
// a newer agent leads: errDeposed.

func fenced(op, sale string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, quota.ErrStaleFence) {
		return fmt.Errorf("%s %s: %w: %w", op, sale, errDeposed, err)
	}
	return fmt.Errorf("%s %s: %w", op, sale, err)
}

func (t *term) counters(ctx context.Context, sale string) (redisstore.Counters, error) {
	octx, cancel := t.op(ctx)
	defer cancel()
	c, err := t.a.store.Counters(octx, sale)
	if err != nil {
		return c, fmt.Errorf("read counters of %s: %w", sale, err)
	}
	return c, nil
}

func (t *term) applyGrant(ctx context.Context, sale string, granted int64) (int64, error) {
	octx, cancel := t.op(ctx)
	defer cancel()
	t.a.m.grants.Inc()
	gs, err := t.a.store.ApplyGrant(octx, sale, t.fence, granted)
	return gs, fenced("apply grant to", sale, err)
}

func (t *term) release(ctx context.Context, sale, id string, k, keep int64) (m, releasedLocal int64, err error) {
	octx, cancel := t.op(ctx)
	defer cancel()
	t.a.m.releases.Inc()
	m, releasedLocal, err = t.a.store.Release(octx, sale, t.fence, 0, id, k, keep)
	return m, releasedLocal, fenced("release "+id+" of", sale, err)
}

func (t *term) raiseFloor(ctx context.Context, sale string, releasedLocal, sold int64) error {
	octx, cancel := t.op(ctx)
	defer cancel()
	return fenced("raise floors of", sale, t.a.store.RaiseFloor(octx, sale, t.fence, releasedLocal, sold))
}

func (t *term) setHalted(ctx context.Context, sale string, halted bool) error {
	octx, cancel := t.op(ctx)
	defer cancel()
	return fenced(fmt.Sprintf("set halted=%v on", halted), sale, t.a.store.SetHalted(octx, sale, t.fence, halted))
}
