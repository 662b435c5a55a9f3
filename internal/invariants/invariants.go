// Package invariants checks DESIGN §3 against the real parts: the
// allocation documents in etcd and every region's Redis. Tests and the dev
// stack's end-to-end runs call it after every scenario; it reads only.
//
// I1 no oversell: Σ over regions of sold + reserved <= total.
// I2 grant bound: each region's ceiling <= its net grant (unless the region
// is halted for reconciliation and sells nothing), Σ net grants <= total.
// I3 per user: a user's active + confirmed reservations, over all regions,
// <= the per-user limit.
// I4 bookkeeping: the counters equal the reservations they summarize
// (reserved = active ones, sold = confirmed ones), so no reservation is lost
// from or doubled in the ledger.
// I5 (fencing) is a behaviour, checked by the tests that depose a leader.
package invariants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/internal/layout"
	"flashsale/quota"
	"flashsale/regional"
)

// Region is one region's Redis, as the checker reads it.
type Region struct {
	Name  string
	Redis redis.UniversalClient
}

// Check reads every sale under prefix and every region, and returns every
// violation found (nil when all hold).
func Check(ctx context.Context, cli *clientv3.Client, prefix string, regions []Region) error {
	keys := layout.Keys{Prefix: prefix}
	resp, err := cli.Get(ctx, keys.Allocs(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read allocations: %w", err)
	}
	var errs []error
	for _, kv := range resp.Kvs {
		var a quota.Allocation
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			errs = append(errs, fmt.Errorf("allocation %s: %w", kv.Key, err))
			continue
		}
		spec, err := readSpec(ctx, cli, keys, a.Sale)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, CheckSale(ctx, &a, spec.PerUserLimit, regions))
	}
	return errors.Join(errs...)
}

func readSpec(ctx context.Context, cli *clientv3.Client, keys layout.Keys, sale string) (layout.SaleSpec, error) {
	var spec layout.SaleSpec
	r, err := cli.Get(ctx, keys.Sale(sale))
	if err != nil {
		return spec, fmt.Errorf("read sale %s: %w", sale, err)
	}
	if len(r.Kvs) == 0 {
		return spec, fmt.Errorf("allocation for sale %s has no sale spec", sale)
	}
	return spec, json.Unmarshal(r.Kvs[0].Value, &spec)
}

// CheckSale checks one sale's allocation a against the regions' Redis.
func CheckSale(ctx context.Context, a *quota.Allocation, perUserLimit int64, regions []Region) error {
	var errs []error
	if err := a.Check(); err != nil {
		errs = append(errs, fmt.Errorf("sale %s: %w", a.Sale, err))
	}
	var used int64
	users := map[string]int64{}
	for _, r := range regions {
		ra, ok := a.Regions[r.Name]
		if !ok {
			continue
		}
		st, err := readRegion(ctx, r.Redis, a.Sale)
		if err != nil {
			errs = append(errs, fmt.Errorf("sale %s region %s: %w", a.Sale, r.Name, err))
			continue
		}
		used += st.sold + st.reserved
		if !st.halted && st.grantedSeen-st.releasedLocal > ra.Net() {
			errs = append(errs, fmt.Errorf("I2: sale %s region %s: ceiling %d (granted_seen %d - released_local %d) > net grant %d",
				a.Sale, r.Name, st.grantedSeen-st.releasedLocal, st.grantedSeen, st.releasedLocal, ra.Net()))
		}
		if st.active != st.reserved || st.confirmed != st.sold {
			errs = append(errs, fmt.Errorf("I4: sale %s region %s: counters reserved %d sold %d, reservations active %d confirmed %d",
				a.Sale, r.Name, st.reserved, st.sold, st.active, st.confirmed))
		}
		if len(st.userMismatch) > 0 {
			errs = append(errs, fmt.Errorf("I3: sale %s region %s: per-user hash disagrees with reservations: %v", a.Sale, r.Name, st.userMismatch))
		}
		for u, n := range st.holdings {
			users[u] += n
		}
	}
	if used > a.Total {
		errs = append(errs, fmt.Errorf("I1: sale %s: sold + reserved %d > total %d", a.Sale, used, a.Total))
	}
	for u, n := range users {
		if n > perUserLimit {
			errs = append(errs, fmt.Errorf("I3: sale %s: user %s holds %d > limit %d", a.Sale, u, n, perUserLimit))
		}
	}
	return errors.Join(errs...)
}

type regionState struct {
	grantedSeen, releasedLocal, sold, reserved int64
	halted                                     bool
	active, confirmed                          int64
	holdings                                   map[string]int64 // user -> active + confirmed
	userMismatch                               []string         // users hash disagreeing with the reservations
}

// readRegion reads the ledger and every reservation of sale. It scans the
// reservation hashes, so it is for tests and checks, not the hot path.
func readRegion(ctx context.Context, rdb redis.UniversalClient, sale string) (regionState, error) {
	st := regionState{holdings: map[string]int64{}}
	h, err := rdb.HGetAll(ctx, regional.SaleKey(sale, "ledger")).Result()
	if err != nil {
		return st, err
	}
	num := func(f string) int64 { n, _ := strconv.ParseInt(h[f], 10, 64); return n }
	st.grantedSeen, st.releasedLocal = num("granted_seen"), num("released_local")
	st.sold, st.reserved, st.halted = num("sold"), num("reserved"), num("halted") == 1
	const batch = 500
	for from := int64(1); from <= num("seq"); from += batch {
		pipe := rdb.Pipeline()
		var cmds []*redis.MapStringStringCmd
		for id := from; id < from+batch && id <= num("seq"); id++ {
			cmds = append(cmds, pipe.HGetAll(ctx, regional.ResvKey(sale, strconv.FormatInt(id, 10))))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return st, err
		}
		for _, c := range cmds {
			r := c.Val()
			switch r["state"] {
			case "active":
				st.active++
				st.holdings[r["user"]]++
			case "confirmed":
				st.confirmed++
				st.holdings[r["user"]]++
			}
		}
	}
	users, err := rdb.HGetAll(ctx, regional.SaleKey(sale, "users")).Result()
	if err != nil {
		return st, err
	}
	for u, v := range users {
		if n, _ := strconv.ParseInt(v, 10, 64); n != st.holdings[u] {
			st.userMismatch = append(st.userMismatch, fmt.Sprintf("%s: hash %d, reservations %d", u, n, st.holdings[u]))
		}
	}
	for u, n := range st.holdings {
		if _, ok := users[u]; !ok {
			st.userMismatch = append(st.userMismatch, fmt.Sprintf("%s: hash 0, reservations %d", u, n))
		}
	}
	return st, nil
}
