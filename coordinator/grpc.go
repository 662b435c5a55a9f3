package coordinator

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"flashsale/coordinator/api"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// server implements api.CoordinatorServer on top of a Coordinator.
type server struct {
	api.UnimplementedCoordinatorServer
	c *Coordinator
}

// authInterceptor requires the bearer token on every Coordinator call; the
// health service stays open for probes.
func (c *Coordinator) authInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if c.cfg.InsecureNoAuth || !strings.HasPrefix(info.FullMethod, "/"+api.Coordinator_ServiceDesc.ServiceName+"/") {
		return h(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return nil, status.Error(codes.Unauthenticated, "missing authorization metadata (want \"Bearer <token>\")")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) != 1 {
		return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return h(ctx, req)
}

// grpcErr maps internal errors to status codes callers can act on.
func (c *Coordinator) grpcErr(ctx context.Context, err error) error {
	var ae *argError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return status.Error(codes.InvalidArgument, ae.msg)
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrDeposed):
		addr, lerr := c.LeaderAddr(ctx)
		if lerr != nil || addr == "" {
			return status.Error(codes.Unavailable, "not leader, no leader elected yet; retry")
		}
		return status.Errorf(codes.Unavailable, "not leader, leader is at %s", addr)
	case errors.Is(err, errNoSale):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.Aborted, "allocation changed concurrently; read it again and retry")
	case errors.Is(err, errPrecondition), errors.Is(err, quota.ErrOverTotal),
		errors.Is(err, quota.ErrReleaseBusy), errors.Is(err, quota.ErrAboveNet),
		errors.Is(err, quota.ErrAboveMax), errors.Is(err, quota.ErrBelowHeld):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, quota.ErrUnknownRgn), errors.Is(err, quota.ErrBadAmount),
		errors.Is(err, quota.ErrBadMove), errors.Is(err, quota.ErrNegative):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	c.log.Error("api call failed", "err", err)
	return status.Error(codes.Internal, err.Error())
}

var (
	errExists       = errors.New("already exists")
	errPrecondition = errors.New("refused")
)

func refused(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errPrecondition, fmt.Sprintf(format, a...))
}

// leaderFence returns the fence for a write, or ErrNotLeader.
func (c *Coordinator) leaderFence() (fence, error) {
	f, ok := c.currentFence()
	if !ok {
		return fence{}, ErrNotLeader
	}
	return f, nil
}

func (s *server) CreateSale(ctx context.Context, req *api.CreateSaleRequest) (*api.Sale, error) {
	c := s.c
	spec, err := specFromProto(req.GetSale())
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	if now := c.cfg.Now(); !spec.EndsAt.After(now) {
		return nil, c.grpcErr(ctx, badArg("sale.ends_at: %s is not in the future", spec.EndsAt.Format(time.RFC3339)))
	}
	f, err := c.leaderFence()
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	a := newAllocation(spec, c.cfg.Policy)
	sb, err := json.Marshal(spec)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	ab, err := json.Marshal(a)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	_, err = c.fencedTxn(ctx, f, "sale", []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(c.keys.Sale(spec.ID)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(c.keys.Alloc(spec.ID)), "=", 0),
	}, clientv3.OpPut(c.keys.Sale(spec.ID), string(sb)), clientv3.OpPut(c.keys.Alloc(spec.ID), string(ab)))
	if errors.Is(err, ErrConflict) {
		err = fmt.Errorf("sale %s: %w", spec.ID, errExists)
	}
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	c.log.Info("sale created", "sale", spec.ID, "total", spec.Total, "regions", len(spec.Regions), "startsAt", spec.StartsAt)
	return specToProto(spec), nil
}

// newAllocation is a sale's allocation before the initial split: its
// regions with their weights and bounds, nothing granted.
func newAllocation(spec layout.SaleSpec, pol quota.Policy) *quota.Allocation {
	regions := make([]quota.RegionBounds, len(spec.Regions))
	for i, r := range spec.Regions {
		regions[i] = quota.RegionBounds{Name: r.Name, Weight: r.Weight, Min: r.Min, Max: r.Max}
	}
	return quota.NewSale(spec.ID, spec.Total, regions, pol)
}

func (s *server) GetSale(ctx context.Context, req *api.GetSaleRequest) (*api.Sale, error) {
	if err := checkName("id", req.GetId()); err != nil {
		return nil, s.c.grpcErr(ctx, err)
	}
	spec, _, err := s.c.readSale(ctx, req.GetId())
	if err != nil {
		return nil, s.c.grpcErr(ctx, err)
	}
	return specToProto(spec), nil
}

func (s *server) ListSales(ctx context.Context, _ *api.ListSalesRequest) (*api.ListSalesResponse, error) {
	resp, err := s.c.cli.Get(ctx, s.c.keys.Sales(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.c.grpcErr(ctx, fmt.Errorf("list sales: %w", err))
	}
	out := &api.ListSalesResponse{}
	for _, kv := range resp.Kvs {
		spec, err := layout.DecodeSale(kv.Key, kv.Value)
		if err != nil {
			return nil, s.c.grpcErr(ctx, err)
		}
		out.Sales = append(out.Sales, specToProto(spec))
	}
	return out, nil
}

func (s *server) EndSale(ctx context.Context, req *api.SaleRef) (*api.Sale, error) {
	return s.setState(ctx, req.GetId(), layout.SaleEnded)
}

func (s *server) PauseSale(ctx context.Context, req *api.SaleRef) (*api.Sale, error) {
	return s.setState(ctx, req.GetId(), layout.SalePaused)
}

func (s *server) ResumeSale(ctx context.Context, req *api.SaleRef) (*api.Sale, error) {
	return s.setState(ctx, req.GetId(), layout.SaleActive)
}

// setState changes a sale's operator state; an ended sale stays ended.
func (s *server) setState(ctx context.Context, id string, to layout.SaleState) (*api.Sale, error) {
	c := s.c
	if err := checkName("id", id); err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	f, err := c.leaderFence()
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	resp, err := c.cli.Get(ctx, c.keys.Sale(id))
	if err != nil {
		return nil, c.grpcErr(ctx, fmt.Errorf("read sale %s: %w", id, err))
	}
	if len(resp.Kvs) == 0 {
		return nil, c.grpcErr(ctx, fmt.Errorf("sale %s: %w", id, errNoSale))
	}
	spec, err := layout.DecodeSale(resp.Kvs[0].Key, resp.Kvs[0].Value)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	if spec.State == to {
		return specToProto(spec), nil
	}
	if spec.State == layout.SaleEnded {
		return nil, c.grpcErr(ctx, refused("sale %s has ended; it cannot become %s", id, to))
	}
	spec.State = to
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	_, err = c.fencedTxn(ctx, f, "sale",
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(c.keys.Sale(id)), "=", resp.Kvs[0].ModRevision)},
		clientv3.OpPut(c.keys.Sale(id), string(b)))
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	c.log.Info("sale state changed", "sale", id, "state", to)
	return specToProto(spec), nil
}

// saleView is a sale with its allocation and its regions' reports.
type saleView struct {
	spec    layout.SaleSpec
	doc     allocDoc
	reports map[string]layout.RegionReport
	revs    map[string]int64 // each report's mod revision
	live    map[string]layout.RegionInfo
	// ackCmps are the compares of the acks takeReports took: a write
	// carrying them lands only while their reports are the ones etcd holds.
	ackCmps []clientv3.Cmp
}

func (c *Coordinator) readView(ctx context.Context, id string) (*saleView, error) {
	if err := checkName("id", id); err != nil {
		return nil, err
	}
	spec, doc, err := c.readSale(ctx, id)
	if err != nil {
		return nil, err
	}
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(c.keys.Reports(), clientv3.WithPrefix()),
		clientv3.OpGet(c.keys.Regions(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read reports: %w", err)
	}
	v := &saleView{spec: spec, doc: doc, reports: map[string]layout.RegionReport{}, revs: map[string]int64{}, live: map[string]layout.RegionInfo{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if rep, err := c.keys.DecodeReport(kv.Key, kv.Value); err == nil && rep.Sale == id {
			v.reports[rep.Region], v.revs[rep.Region] = rep, kv.ModRevision
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if info, err := layout.DecodeRegion(kv.Key, kv.Value); err == nil {
			v.live[layout.Last(string(kv.Key))] = info
		}
	}
	return v, nil
}

func (s *server) SaleStatus(ctx context.Context, req *api.SaleRef) (*api.SaleStatusResponse, error) {
	c := s.c
	v, err := c.readView(ctx, req.GetId())
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	now := c.cfg.Now()
	a := v.doc.alloc
	out := &api.SaleStatusResponse{
		Sale:          specToProto(v.spec),
		Open:          v.spec.State == layout.SaleActive && !now.Before(v.spec.StartsAt) && now.Before(v.spec.EndsAt),
		Unallocated:   a.Unallocated(),
		AllocRevision: v.doc.modRev,
	}
	view := cloneAlloc(a).LiveView(liveOf(v.reports))
	for r, rep := range v.reports {
		if ra, ok := view.Regions[r]; ok {
			rp := rep.Report
			ra.Report = &rp
		}
	}
	qs := view.Status(now.UnixMilli(), a.PolicyOf())
	tot := &api.RegionStatus{Region: "total"}
	for _, q := range qs.Regions {
		rs := &api.RegionStatus{Region: q.Region, Granted: q.Granted, Released: q.Released, Net: q.Net,
			Sold: q.Sold, Reserved: q.Reserved, Available: q.Available, Demand: q.Demand}
		if p := q.Pending; p != nil {
			rs.PendingReleaseId, rs.PendingUnits, rs.PendingTo = p.ID, p.Units, p.To
		}
		if rep, ok := v.reports[q.Region]; ok {
			age := max(0, now.Sub(time.UnixMilli(rep.At)))
			rs.Reported, rs.Halted = true, rep.Halted
			rs.ReportAge = durationpb.New(age)
			rs.Fresh = age <= c.cfg.ReportStale
		}
		rs.Sellers = v.live[q.Region].Sellers
		tot.Granted += rs.Granted
		tot.Released += rs.Released
		tot.Net += rs.Net
		tot.Sold += rs.Sold
		tot.Reserved += rs.Reserved
		tot.Available += rs.Available
		tot.Demand += rs.Demand
		out.Regions = append(out.Regions, rs)
	}
	out.Totals = tot
	return out, nil
}

func planToProto(sale string, modRev int64, p planResult, applied bool) *api.Plan {
	out := &api.Plan{Sale: sale, AllocRevision: modRev, Applied: applied, Note: p.note}
	for _, g := range p.grants {
		out.Grants = append(out.Grants, &api.GrantStep{Region: g.Region, Units: g.Units})
	}
	for _, r := range p.releases {
		out.Releases = append(out.Releases, &api.ReleaseStep{Id: r.ID, Region: r.Region, Units: r.Units, To: r.To})
	}
	return out
}

// operatorSituation is the loop's situation for an operator's rebalance:
// a paused sale is exactly when an operator moves quota by hand, and an
// operator's call is news enough to end learning for it.
func (c *Coordinator) operatorSituation(v *saleView) quota.Situation {
	sit := c.situation(v, c.cfg.Now(), false)
	sit.Paused = false
	return sit
}

func (s *server) PlanRebalance(ctx context.Context, req *api.SaleRef) (*api.Plan, error) {
	c := s.c
	v, err := c.readView(ctx, req.GetId())
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	a := cloneAlloc(v.doc.alloc)
	c.takeReports(a, v)
	plan, note, err := a.Decide(c.operatorSituation(v))
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	return planToProto(v.spec.ID, v.doc.modRev, fromPlan(plan, note+" (not applied)"), false), nil
}

// mutate runs one operator change of a sale's allocation on the leader:
// read, change (on a copy), check, write with both compares.
func (c *Coordinator) mutate(ctx context.Context, id string, change func(v *saleView, a *quota.Allocation) (planResult, error)) (*api.Plan, error) {
	f, err := c.leaderFence()
	if err != nil {
		return nil, err
	}
	c.allocMu.Lock()
	defer c.allocMu.Unlock()
	v, err := c.readView(ctx, id)
	if err != nil {
		return nil, err
	}
	a := cloneAlloc(v.doc.alloc)
	p, err := change(v, a)
	if err != nil {
		return nil, err
	}
	if quota.SameCounters(v.doc.alloc, a) {
		return planToProto(id, v.doc.modRev, p, false), nil
	}
	rev, err := c.writeAlloc(ctx, f, a, v.doc.modRev, v.ackCmps)
	if err != nil {
		return nil, err
	}
	c.countPlan(p)
	c.log.Info("allocation changed by operator", "sale", id, "grants", p.grants, "releases", p.releases, "note", p.note)
	return planToProto(id, rev, p, true), nil
}

func (s *server) ApplyRebalance(ctx context.Context, req *api.ApplyRebalanceRequest) (*api.Plan, error) {
	c := s.c
	p, err := c.mutate(ctx, req.GetId(), func(v *saleView, a *quota.Allocation) (planResult, error) {
		if rev := req.GetAllocRevision(); rev != 0 && rev != v.doc.modRev {
			return planResult{}, refused("alloc_revision: the allocation is now at %d, not %d; plan again", v.doc.modRev, rev)
		}
		c.takeReports(a, v)
		plan, note, err := a.Decide(c.operatorSituation(v))
		if err != nil {
			return planResult{}, err
		}
		acts, err := a.Apply(plan)
		return fromActions(acts, "operator: "+note), err
	})
	return p, c.grpcErr(ctx, err)
}

func (s *server) Move(ctx context.Context, req *api.MoveRequest) (*api.Plan, error) {
	c := s.c
	if err := checkName("sale", req.GetSale()); err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	if req.GetFrom() != "" {
		if err := checkName("from", req.GetFrom()); err != nil {
			return nil, c.grpcErr(ctx, err)
		}
	}
	if err := checkName("to", req.GetTo()); err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	if req.GetUnits() <= 0 {
		return nil, c.grpcErr(ctx, badArg("units: %d must be positive", req.GetUnits()))
	}
	if req.GetFrom() == req.GetTo() {
		return nil, c.grpcErr(ctx, badArg("to: %q is also the source region", req.GetTo()))
	}
	p, err := c.mutate(ctx, req.GetSale(), func(v *saleView, a *quota.Allocation) (planResult, error) {
		for _, f := range [][2]string{{"from", req.GetFrom()}, {"to", req.GetTo()}} {
			if _, ok := a.Regions[f[1]]; f[1] != "" && !ok {
				return planResult{}, badArg("%s: region %q is not in sale %s", f[0], f[1], a.Sale)
			}
		}
		return planMove(a, req.GetFrom(), req.GetTo(), req.GetUnits())
	})
	return p, c.grpcErr(ctx, err)
}

func (s *server) Drain(ctx context.Context, req *api.DrainRequest) (*api.DrainResponse, error) {
	c := s.c
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	var ids []string
	if req.GetSale() != "" {
		if err := checkName("sale", req.GetSale()); err != nil {
			return nil, c.grpcErr(ctx, err)
		}
		ids = []string{req.GetSale()}
	} else {
		resp, err := c.cli.Get(ctx, c.keys.Allocs(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, c.grpcErr(ctx, fmt.Errorf("list allocations: %w", err))
		}
		for _, kv := range resp.Kvs {
			ids = append(ids, layout.Last(string(kv.Key)))
		}
		sort.Strings(ids)
	}
	out := &api.DrainResponse{}
	found := false
	for _, id := range ids {
		p, err := c.mutate(ctx, id, func(v *saleView, a *quota.Allocation) (planResult, error) {
			if _, ok := a.Regions[req.GetRegion()]; !ok {
				if req.GetSale() != "" {
					return planResult{}, badArg("region: %q is not in sale %s", req.GetRegion(), id)
				}
				return planResult{}, nil // draining everywhere: skip sales without it
			}
			found = true
			return planDrain(a, req.GetRegion(), req.GetSpread())
		})
		if err != nil {
			return out, c.grpcErr(ctx, fmt.Errorf("drain %s in sale %s: %w", req.GetRegion(), id, err))
		}
		if len(p.Grants)+len(p.Releases) > 0 || req.GetSale() != "" {
			out.Plans = append(out.Plans, p)
		}
	}
	if !found && len(ids) > 0 {
		return nil, c.grpcErr(ctx, badArg("region: %q takes part in no sale (a typo?)", req.GetRegion()))
	}
	return out, nil
}

func (s *server) Readiness(ctx context.Context, _ *api.ReadinessRequest) (*api.ReadinessResponse, error) {
	c := s.c
	out := &api.ReadinessResponse{Ready: true}
	add := func(name string, ok bool, format string, a ...any) {
		out.Checks = append(out.Checks, &api.Check{Name: name, Ok: ok, Detail: fmt.Sprintf(format, a...)})
		out.Ready = out.Ready && ok
	}
	addr, err := c.LeaderAddr(ctx)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	out.Leader = addr
	add("leader", addr != "", "leader at %q", addr)
	if c.IsLeader() {
		learning := c.isLearning()
		add("learning", !learning, "this leader learning=%v", learning)
	}
	snap, err := c.readSnapshot(ctx)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	now := c.cfg.Now()
	regionsInSales := map[string]bool{}
	for _, id := range snap.saleIDs() {
		spec := snap.sales[id]
		doc, ok := snap.allocs[id]
		if !ok {
			add("alloc/"+id, false, "sale %s has no allocation", id)
			continue
		}
		if err := doc.alloc.Check(); err != nil {
			add("i2/"+id, false, "%v", err)
		} else {
			add("i2/"+id, true, "sum of net grants %d <= total %d", doc.alloc.SumNet(), doc.alloc.Total)
		}
		if spec.State == layout.SaleEnded || !now.Before(spec.EndsAt) {
			continue
		}
		for _, r := range doc.alloc.RegionNames() {
			rep, ok := snap.reports[id][r]
			switch {
			case !ok:
				add("report/"+id+"/"+r, false, "no report from region %s (agent down or not started)", r)
			case now.Sub(time.UnixMilli(rep.At)) > c.cfg.ReportStale:
				add("report/"+id+"/"+r, false, "report from region %s is %v old", r, now.Sub(time.UnixMilli(rep.At)).Round(time.Millisecond))
			default:
				add("report/"+id+"/"+r, true, "fresh")
			}
			if ok && rep.At-now.UnixMilli() > maxClockAhead.Milliseconds() {
				// A report cannot come from the future: the region's clock
				// runs ahead of ours (one that runs behind shows as stale).
				add("clock/"+id+"/"+r, false, "region %s's clock is %v ahead of the coordinator's", r,
					time.Duration(rep.At-now.UnixMilli())*time.Millisecond)
			}
			regionsInSales[r] = true
		}
	}
	for _, r := range sortedKeys(regionsInSales) {
		info, ok := snap.regions[r]
		if !ok {
			add("agent/"+r, false, "region %s has no live agent (no region info on a lease)", r)
			continue
		}
		add("agent/"+r, true, "agent at fence %d, endpoint %s", info.Fence, info.Endpoint)
		add("durable/"+r, info.Durable, "redis %s appendfsync always: %v", info.RedisAddr, info.Durable)
		add("scripts/"+r, info.ScriptsLoaded, "Lua scripts loaded: %v", info.ScriptsLoaded)
	}
	return out, nil
}

// maxClockAhead is the most a region's clock may run ahead of the
// coordinator's before readiness fails: reservation expiry and sale
// opening are judged on each region's clock.
const maxClockAhead = 500 * time.Millisecond

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
