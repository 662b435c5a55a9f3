package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// Sentinel errors callers branch on.
var (
	// ErrDeposed: the leader fence compare failed. The caller is no longer
	// leader and must stop acting; retrying the same write is never right.
	ErrDeposed = errors.New("deposed: no longer the coordinator leader")
	// ErrConflict: the allocation changed since it was read (optimistic
	// concurrency); read again and decide again.
	ErrConflict = errors.New("allocation changed concurrently")
	// ErrNotLeader: this coordinator does not lead, so it does not write.
	ErrNotLeader = errors.New("not leader")
)

// fence is what makes a leader's write a leader's write: its election key
// and that key's create revision (STYLE §5).
type fence struct {
	key string
	rev int64
}

func (f fence) cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev)
}

// allocDoc is an allocation as read from etcd, with the mod revision its
// next write must compare against.
type allocDoc struct {
	alloc  *quota.Allocation
	modRev int64
}

// snapshot is one consistent read of everything the loop decides from.
type snapshot struct {
	rev     int64
	sales   map[string]layout.SaleSpec
	allocs  map[string]allocDoc
	reports map[string]map[string]layout.RegionReport // sale -> region -> report
	// revs is each report's mod revision (sale -> region -> revision): a
	// write of an ack compares the report it came from.
	revs    map[string]map[string]int64
	regions map[string]layout.RegionInfo // live regions (on their agents' leases)
	// reportRev is, per region, the newest mod revision of any of its
	// reports: a clock-free way to tell "reported since I was elected".
	reportRev map[string]int64
}

func (s *snapshot) saleIDs() []string {
	ids := make([]string, 0, len(s.sales))
	for id := range s.sales {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// readSnapshot reads sales, allocations, reports and live regions at one
// etcd revision. A malformed report or region document is logged and
// skipped (agents are another program); a malformed sale or allocation is
// an error, since the coordinator wrote it.
func (c *Coordinator) readSnapshot(ctx context.Context) (*snapshot, error) {
	k := c.keys
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(k.Sales(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Allocs(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Reports(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Regions(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	s := &snapshot{
		rev:       resp.Header.Revision,
		sales:     map[string]layout.SaleSpec{},
		allocs:    map[string]allocDoc{},
		reports:   map[string]map[string]layout.RegionReport{},
		revs:      map[string]map[string]int64{},
		regions:   map[string]layout.RegionInfo{},
		reportRev: map[string]int64{},
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		spec, err := layout.DecodeSale(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		s.sales[layout.Last(string(kv.Key))] = spec
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		a, err := layout.DecodeAlloc(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		s.allocs[layout.Last(string(kv.Key))] = allocDoc{alloc: a, modRev: kv.ModRevision}
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		rep, err := k.DecodeReport(kv.Key, kv.Value)
		if err != nil {
			c.log.Warn("ignoring a report", "err", err)
			continue
		}
		region, sale := rep.Region, rep.Sale
		if s.reports[sale] == nil {
			s.reports[sale] = map[string]layout.RegionReport{}
			s.revs[sale] = map[string]int64{}
		}
		s.reports[sale][region] = rep
		s.revs[sale][region] = kv.ModRevision
		s.reportRev[region] = max(s.reportRev[region], kv.ModRevision)
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		info, err := layout.DecodeRegion(kv.Key, kv.Value)
		if err != nil {
			c.log.Warn("ignoring malformed region info", "err", err)
			continue
		}
		s.regions[layout.Last(string(kv.Key))] = info
	}
	return s, nil
}

// readAlloc reads one sale's spec and allocation.
func (c *Coordinator) readSale(ctx context.Context, id string) (layout.SaleSpec, allocDoc, error) {
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(c.keys.Sale(id)),
		clientv3.OpGet(c.keys.Alloc(id)),
	).Commit()
	if err != nil {
		return layout.SaleSpec{}, allocDoc{}, fmt.Errorf("read sale %s: %w", id, err)
	}
	skv := resp.Responses[0].GetResponseRange().Kvs
	if len(skv) == 0 {
		return layout.SaleSpec{}, allocDoc{}, fmt.Errorf("sale %s: %w", id, errNoSale)
	}
	spec, err := layout.DecodeSale(skv[0].Key, skv[0].Value)
	if err != nil {
		return layout.SaleSpec{}, allocDoc{}, err
	}
	akv := resp.Responses[1].GetResponseRange().Kvs
	if len(akv) == 0 {
		return spec, allocDoc{}, fmt.Errorf("allocation of sale %s: %w", id, errNoSale)
	}
	a, err := layout.DecodeAlloc(akv[0].Key, akv[0].Value)
	if err != nil {
		return spec, allocDoc{}, fmt.Errorf("allocation of sale %s: %w", id, err)
	}
	return spec, allocDoc{alloc: a, modRev: akv[0].ModRevision}, nil
}

var errNoSale = errors.New("no such sale")

// fencedTxn commits ops only while f is still the leader fence and every
// extra compare holds. A failed leader compare is ErrDeposed; any other
// failed compare is ErrConflict. kind labels the write metric. It returns
// the revision the write committed at.
func (c *Coordinator) fencedTxn(ctx context.Context, f fence, kind string, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(append([]clientv3.Cmp{f.cmp()}, cmps...)...).
		Then(ops...).
		// On failure, read the election key to tell a lost fence from a
		// lost race on the allocation, in the same round trip.
		Else(clientv3.OpGet(f.key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd txn (%s): %w", kind, err)
	}
	if resp.Succeeded {
		c.m.writes.WithLabelValues(kind).Inc()
		return resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || kvs[0].CreateRevision != f.rev {
		c.m.rejected.WithLabelValues("deposed").Inc()
		c.deposed(f)
		return 0, ErrDeposed
	}
	c.m.rejected.WithLabelValues("conflict").Inc()
	return 0, ErrConflict
}

// writeAlloc writes a as the sale's allocation if it is still at modRev
// (0: it must not exist yet) and every compare in cmps holds (those of the
// acks it carries: saleView.ackCmps). It checks I2 first: an allocation
// whose net grants pass the total is never written. It returns the
// allocation's new mod revision.
func (c *Coordinator) writeAlloc(ctx context.Context, f fence, a *quota.Allocation, modRev int64, cmps []clientv3.Cmp, extra ...clientv3.Op) (int64, error) {
	if err := a.Check(); err != nil {
		return 0, fmt.Errorf("refusing to write allocation of %s: %w", a.Sale, err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	key := c.keys.Alloc(a.Sale)
	ops := append([]clientv3.Op{clientv3.OpPut(key, string(b))}, extra...)
	return c.fencedTxn(ctx, f, "alloc",
		append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)}, cmps...), ops...)
}
