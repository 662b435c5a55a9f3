package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// maxOpsPerTxn stays below etcd's default --max-txn-ops (128).
const maxOpsPerTxn = 100

// term is one election won: the driver of the term's Core (core.go). It
// does the I/O the core asks for (etcd transactions fenced by the election
// key, Redis scripts, the order store) and tells the core what happened:
// etcd reads and watch events, ticks, and the answer to each action. It
// decides nothing itself. A term is driven by one goroutine.
type term struct {
	a     *Agent
	sess  *concurrency.Session
	key   string // the election key; its create revision is the fence
	fence int64
	core  *Core
	// infoAt is when the region info was last checked; info what was
	// last written.
	infoAt time.Time
	info   *layout.RegionInfo
}

func newTerm(a *Agent, sess *concurrency.Session, key string, fence int64) *term {
	return &term{a: a, sess: sess, key: key, fence: fence, core: NewCore(CoreConfig{
		Region: a.cfg.Region, Fence: fence, ReportRefresh: a.cfg.ReportRefresh, Logger: a.log,
	})}
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
		// writes are still caught, by comparing with etcd.
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
	if m := c.Membership; m != nil {
		info.Gossip, info.Sellers = m.Addr(), sellerNames(m.Members())
	}
	if t.info != nil && t.info.Durable == durable && t.info.ScriptsLoaded == loaded &&
		t.info.Gossip == info.Gossip && slices.Equal(t.info.Sellers, info.Sellers) {
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

// load reads sales, allocations and every region's reports at one
// revision and tells the core, before the term touches Redis: this
// region's reports are the floors that reveal a Redis that lost writes. It
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
	in := Loaded{Rev: resp.Header.Revision, Now: t.a.cfg.Now(), Allocs: map[string]*quota.Allocation{}, Sales: map[string]*layout.SaleSpec{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if a := t.decodeAlloc(kv.Key, kv.Value); a != nil {
			in.Allocs[layout.Last(string(kv.Key))] = a
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if spec := t.decodeSale(kv.Key, kv.Value); spec != nil {
			in.Sales[layout.Last(string(kv.Key))] = spec
		}
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if rep, err := t.a.keys.DecodeReport(kv.Key, kv.Value); err == nil {
			in.Reports = append(in.Reports, rep)
		} else {
			t.a.log.Error("unreadable region report in etcd; ignored", "err", err)
		}
	}
	if err := t.step(ctx, in); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func (t *term) decodeAlloc(key, value []byte) *quota.Allocation {
	a, err := layout.DecodeAlloc(key, value)
	if err != nil {
		t.a.log.Error("unreadable allocation in etcd; ignored", "err", err)
		return nil
	}
	return a
}

func (t *term) decodeSale(key, value []byte) *layout.SaleSpec {
	spec, err := layout.DecodeSale(key, value)
	if err != nil {
		t.a.log.Error("unreadable sale in etcd; ignored", "err", err)
		return nil
	}
	return &spec
}

// follow watches allocations, sales and reports from rev and tells the core
// every event and a tick every ReportInterval. It returns when a watch
// breaks (the caller re-reads), ctx ends, or the term is deposed.
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
		var ins []Input
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-allocs:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch allocations: %w", err)
			}
			for _, ev := range wr.Events {
				in := AllocChanged{Sale: layout.Last(string(ev.Kv.Key)), ModRev: ev.Kv.ModRevision}
				if ev.Type != clientv3.EventTypeDelete {
					if in.Alloc = t.decodeAlloc(ev.Kv.Key, ev.Kv.Value); in.Alloc == nil {
						continue
					}
				}
				ins = append(ins, in)
			}
		case wr, ok := <-sales:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch sales: %w", err)
			}
			for _, ev := range wr.Events {
				in := SaleChanged{Sale: layout.Last(string(ev.Kv.Key)), ModRev: ev.Kv.ModRevision}
				if ev.Type != clientv3.EventTypeDelete {
					if in.Spec = t.decodeSale(ev.Kv.Key, ev.Kv.Value); in.Spec == nil {
						continue
					}
				}
				ins = append(ins, in)
			}
		case wr, ok := <-reports:
			if err := watchErr(ok, wr); err != nil {
				return fmt.Errorf("watch reports: %w", err)
			}
			for _, ev := range wr.Events {
				region, sale, ok := k.ReportKey(string(ev.Kv.Key))
				if !ok {
					continue
				}
				in := ReportChanged{Region: region, Sale: sale, ModRev: ev.Kv.ModRevision}
				if ev.Type != clientv3.EventTypeDelete {
					rep, err := k.DecodeReport(ev.Kv.Key, ev.Kv.Value)
					if err != nil {
						t.a.log.Error("unreadable region report in etcd; ignored", "err", err)
						continue
					}
					in.Report = &rep
				}
				ins = append(ins, in)
			}
		case <-tick.C:
			if err := t.reregister(ctx); err != nil {
				return err
			}
			ins = append(ins, t.tick())
		}
		for _, in := range ins {
			if err := t.step(ctx, in); err != nil {
				return err
			}
		}
	}
}

func (t *term) tick() Tick {
	in := Tick{Now: t.a.cfg.Now()}
	if d := t.a.cfg.Demand; d != nil {
		in.Demand = map[string]float64{}
		for _, sale := range t.core.names() {
			in.Demand[sale] = d(sale)
		}
	}
	return in
}

func watchErr(ok bool, wr clientv3.WatchResponse) error {
	if !ok {
		return errors.New("watch channel closed")
	}
	return wr.Err()
}

// step tells the core in, then carries out what it asks until it asks
// nothing more. Only deposition (or ctx) ends the term; the core retries
// Redis and etcd failures on the next tick.
func (t *term) step(ctx context.Context, in Input) error {
	if err := t.core.Step(in); err != nil {
		return err
	}
	for {
		acts := t.core.Ready()
		if len(acts) == 0 {
			return ctx.Err()
		}
		for _, r := range t.do(ctx, acts) {
			if r.Err != nil && !r.Deposed {
				t.a.m.errors.Inc()
			}
			if err := t.core.Step(r); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// do carries out actions: the etcd writes of one Ready together in one
// fenced transaction (up to maxOpsPerTxn), the rest one by one.
func (t *term) do(ctx context.Context, acts []Action) []Result {
	out := make([]Result, 0, len(acts))
	var writes []Action
	for _, a := range acts {
		if a.Kind.Etcd() {
			writes = append(writes, a)
			continue
		}
		out = append(out, t.redis(ctx, a))
	}
	for len(writes) > 0 {
		batch := writes[:min(len(writes), maxOpsPerTxn)]
		writes = writes[len(batch):]
		ops := make([]clientv3.Op, 0, len(batch))
		var err error
		for _, a := range batch {
			switch a.Kind {
			case PutReport:
				b, merr := json.Marshal(a.Report)
				err = errors.Join(err, merr)
				ops = append(ops, clientv3.OpPut(t.a.keys.Report(a.Report.Region, a.Sale), string(b), clientv3.WithLease(t.sess.Lease())))
			case DeleteReport:
				ops = append(ops, clientv3.OpDelete(t.a.keys.Report(t.a.cfg.Region, a.Sale)))
			}
		}
		if err == nil {
			err = t.commit(ctx, "reports", ops)
		}
		if err == nil {
			t.a.m.reportWrites.Add(float64(len(batch)))
		}
		for _, a := range batch {
			out = append(out, Result{ID: a.ID, Err: err, Deposed: errors.Is(err, errDeposed)})
		}
	}
	return out
}

// redis runs one Redis (or order store) action under the term's fence.
func (t *term) redis(ctx context.Context, a Action) Result {
	octx, cancel := t.op(ctx)
	defer cancel()
	st, r := t.a.store, Result{ID: a.ID}
	switch a.Kind {
	case ReadCounters:
		r.Counters, r.Err = st.Counters(octx, a.Sale)
	case SetHalted:
		if a.Lost {
			t.a.log.Error("REDIS LOST WRITES: counters below what etcd last heard; halting the region to reconcile", "sale", a.Sale)
			t.a.m.lostWrites.Inc()
		}
		r.Err = st.SetHalted(octx, a.Sale, a.Fence, a.Halted)
	case RestoreOrders:
		if w := t.a.cfg.Witness; w != nil {
			r.SoldFloor, r.Err = w.Restore(octx, a.Sale, a.Fence)
		}
	case RaiseFloor:
		r.Err = st.RaiseFloor(octx, a.Sale, a.Fence, a.ReleasedLocal, a.Sold)
	case ApplyGrant:
		t.a.m.grants.Inc()
		r.GrantedSeen, r.Err = st.ApplyGrant(octx, a.Sale, a.Fence, a.Granted)
	case Release:
		t.a.m.releases.Inc()
		p := a.Release
		r.M, r.ReleasedLocal, r.Err = st.Release(octx, a.Sale, a.Fence, a.Epoch, p.ID, p.Units, p.Keep)
		if h := t.a.testHookAfterRelease; h != nil && r.Err == nil {
			h(ctx, a.Sale, p.ID)
		}
	case Resume:
		r.GrantedSeen, r.Err = st.Resume(octx, a.Sale, a.Fence, a.Epoch, a.Primary, a.Granted)
	case SetView:
		r.Err = st.SetSaleView(octx, a.Sale, a.Fence, a.View)
	default:
		r.Err = fmt.Errorf("region agent: unknown action %v", a.Kind)
	}
	if r.Err != nil {
		r.Err = fmt.Errorf("%v of sale %s: %w", a.Kind, a.Sale, r.Err)
	}
	return r
}
