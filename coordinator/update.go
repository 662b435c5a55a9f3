package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"flashsale/coordinator/api"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// defaultReleaseWait bounds how long UpdateSale waits for the releases a
// lowered total needs, when the caller names no bound. An agent answers a
// release within a report interval or two; ten seconds covers a slow one
// without holding a Terraform apply for long.
const defaultReleaseWait = 10 * time.Second

// updatePoll is how often UpdateSale looks for the acknowledgements of the
// releases it asked for. It applies them itself, in the same write as the
// lowered total, so the rebalancer cannot grant the freed units again in
// between (it would, to a region short of its demand).
const updatePoll = 25 * time.Millisecond

// UpdateSale changes a sale's definition in place (see the proto for what
// may change). Everything but a lowered total is one fenced write of the
// sale and its allocation; a lowered total that needs units back first
// writes release requests and finishes once they are acknowledged.
func (s *server) UpdateSale(ctx context.Context, req *api.UpdateSaleRequest) (*api.Sale, error) {
	c := s.c
	in := req.GetSale()
	if in != nil && in.State != "" {
		// The state is ignored, whatever it says (a Sale read back from
		// GetSale may be ended or paused).
		in = proto.Clone(in).(*api.Sale)
		in.State = ""
	}
	want, err := specFromProto(in)
	if err != nil {
		return nil, c.grpcErr(ctx, err)
	}
	wait := defaultReleaseWait
	if w := req.GetReleaseWait(); w != nil {
		if w.AsDuration() < 0 {
			return nil, c.grpcErr(ctx, badArg("release_wait: %v must not be negative", w.AsDuration()))
		}
		if w.AsDuration() > 0 {
			wait = w.AsDuration()
		}
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(updatePoll)
	defer tick.Stop()
	for {
		f, err := c.leaderFence()
		if err != nil {
			return nil, c.grpcErr(ctx, err)
		}
		spec, waiting, err := c.updateOnce(ctx, f, want)
		switch {
		case err == nil && waiting == "":
			return specToProto(spec), nil
		case err != nil && !errors.Is(err, ErrConflict):
			return nil, c.grpcErr(ctx, err)
		}
		// A conflict (the loop or another call wrote the allocation) or
		// releases still out: look again shortly.
		select {
		case <-ctx.Done():
			return nil, c.grpcErr(ctx, ctx.Err())
		case <-deadline.C:
			if waiting == "" {
				waiting = "the allocation kept changing under this call"
			}
			return nil, status.Errorf(codes.Aborted, "sale %s: total not lowered to %d within %v: %s; the releases stay requested, call again to finish",
				want.ID, want.Total, wait, waiting)
		case <-tick.C:
		}
	}
}

// updateOnce makes one step of an update under the allocation lock: it
// applies the regions' reports (and the acks they carry), then either
// writes the new definition with its allocation (done) or writes the
// releases a lowered total still needs and says what it waits for.
func (c *Coordinator) updateOnce(ctx context.Context, f fence, want layout.SaleSpec) (layout.SaleSpec, string, error) {
	c.allocMu.Lock()
	defer c.allocMu.Unlock()
	cur, saleRev, v, err := c.readForUpdate(ctx, want.ID)
	if err != nil {
		return cur, "", err
	}
	if err := checkUpdate(cur, want, c.cfg.Now()); err != nil {
		return cur, "", err
	}
	want.State = cur.State // run state is not the definition's to change

	doc := v.doc
	a := cloneAlloc(doc.alloc)
	c.takeReports(a, v)
	view := a.LiveView(liveOf(v.reports))
	plan, err := view.SetTotal(want.Total)
	if err != nil {
		return cur, "", fmt.Errorf("total: sale %s cannot go from %d to %d: %w", want.ID, cur.Total, want.Total, err)
	}
	if view.Total != want.Total {
		acts, err := a.Apply(plan)
		if err != nil {
			return cur, "", fmt.Errorf("total: release for sale %s: %w", want.ID, err)
		}
		if !quota.SameCounters(doc.alloc, a) {
			if _, err := c.writeAlloc(ctx, f, a, doc.modRev, v.ackCmps); err != nil {
				return cur, "", err
			}
			c.countPlan(fromActions(acts, ""))
			c.log.Info("lowering a sale's total: releases requested", "sale", want.ID, "from", cur.Total, "to", want.Total, "releases", acts.Releases)
		}
		return cur, pendingReleases(a), nil
	}
	a.Total = want.Total
	for _, r := range want.Regions {
		ra := a.Regions[r.Name]
		// A drained region (weight 0 in the allocation, not in the spec)
		// stays drained: a drain is an operator's act, not the definition's.
		if !(ra.Weight == 0 && specWeight(cur, r.Name) > 0) {
			ra.Weight = r.Weight
		}
		ra.Min, ra.Max = r.Min, r.Max
	}
	if specEqual(cur, want) && quota.SameCounters(doc.alloc, a) {
		return cur, "", nil
	}
	if err := a.Check(); err != nil {
		return cur, "", fmt.Errorf("refusing to write allocation of %s: %w", a.Sale, err)
	}
	sb, err := json.Marshal(want)
	if err != nil {
		return cur, "", err
	}
	ab, err := json.Marshal(a)
	if err != nil {
		return cur, "", err
	}
	if _, err := c.fencedTxn(ctx, f, "sale", append([]clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(c.keys.Sale(want.ID)), "=", saleRev),
		clientv3.Compare(clientv3.ModRevision(c.keys.Alloc(want.ID)), "=", doc.modRev),
	}, v.ackCmps...), clientv3.OpPut(c.keys.Sale(want.ID), string(sb)), clientv3.OpPut(c.keys.Alloc(want.ID), string(ab))); err != nil {
		return cur, "", err
	}
	c.log.Info("sale updated", "sale", want.ID, "total", want.Total, "was", cur.Total, "endsAt", want.EndsAt)
	return want, "", nil
}

// checkUpdate refuses what cannot change in place. Sale ids are never
// reused, so the message says to create a sale with a new id.
func checkUpdate(cur, want layout.SaleSpec, now time.Time) error {
	if cur.State == layout.SaleEnded || !now.Before(cur.EndsAt) {
		return refused("sale %s has ended; it cannot change (sale ids are never reused: create a sale with a new id)", cur.ID)
	}
	have, asked := regionSet(cur), regionSet(want)
	if !slices.Equal(have, asked) {
		return refused("sale.regions: the regions of sale %s cannot change in place (it has %s, asked for %s): create a sale with a new id",
			cur.ID, strings.Join(have, ","), strings.Join(asked, ","))
	}
	if cur.PerUserLimit != want.PerUserLimit {
		return refused("sale.per_user_limit: sale %s's per-user limit %d cannot change in place to %d (buyers have bought under it): create a sale with a new id",
			cur.ID, cur.PerUserLimit, want.PerUserLimit)
	}
	if !want.StartsAt.Equal(cur.StartsAt) && !now.Before(cur.StartsAt) {
		return refused("sale.starts_at: sale %s opened at %s; its start can no longer change", cur.ID, cur.StartsAt.Format(time.RFC3339))
	}
	if !want.EndsAt.Equal(cur.EndsAt) && !want.EndsAt.After(now) {
		return badArg("sale.ends_at: %s is not in the future", want.EndsAt.Format(time.RFC3339))
	}
	return nil
}

func regionSet(s layout.SaleSpec) []string {
	out := make([]string, len(s.Regions))
	for i, r := range s.Regions {
		out[i] = r.Name
	}
	slices.Sort(out)
	return out
}

func specWeight(s layout.SaleSpec, region string) int64 {
	for _, r := range s.Regions {
		if r.Name == region {
			return r.Weight
		}
	}
	return 0
}

func specEqual(a, b layout.SaleSpec) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// pendingReleases describes the releases a lowering waits for.
func pendingReleases(a *quota.Allocation) string {
	var parts []string
	for _, n := range a.RegionNames() {
		if p := a.Regions[n].Pending; p != nil {
			parts = append(parts, fmt.Sprintf("%s releasing %d (%s)", n, p.Units, p.ID))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("sum of net grants %d still above the new total", a.SumNet())
	}
	return "waiting for " + strings.Join(parts, ", ")
}

// readForUpdate reads a sale, its allocation and its regions' live reports
// at one revision, with the mod revisions the update's write compares: the
// sale's, and the allocation's and reports' in the view.
func (c *Coordinator) readForUpdate(ctx context.Context, id string) (layout.SaleSpec, int64, *saleView, error) {
	var spec layout.SaleSpec
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(c.keys.Sale(id)),
		clientv3.OpGet(c.keys.Alloc(id)),
		clientv3.OpGet(c.keys.Reports(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return spec, 0, nil, fmt.Errorf("read sale %s: %w", id, err)
	}
	skv := resp.Responses[0].GetResponseRange().Kvs
	if len(skv) == 0 {
		return spec, 0, nil, fmt.Errorf("sale %s: %w", id, errNoSale)
	}
	spec, err = layout.DecodeSale(skv[0].Key, skv[0].Value)
	if err != nil {
		return spec, 0, nil, err
	}
	akv := resp.Responses[1].GetResponseRange().Kvs
	if len(akv) == 0 {
		return spec, 0, nil, fmt.Errorf("allocation of sale %s: %w", id, errNoSale)
	}
	a, err := layout.DecodeAlloc(akv[0].Key, akv[0].Value)
	if err != nil {
		return spec, 0, nil, fmt.Errorf("allocation of sale %s: %w", id, err)
	}
	v := &saleView{spec: spec, doc: allocDoc{alloc: a, modRev: akv[0].ModRevision},
		reports: map[string]layout.RegionReport{}, revs: map[string]int64{}}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if rep, err := c.keys.DecodeReport(kv.Key, kv.Value); err == nil && rep.Sale == id {
			v.reports[rep.Region], v.revs[rep.Region] = rep, kv.ModRevision
		}
	}
	return spec, skv[0].ModRevision, v, nil
}
