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
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"flashsale/quota"
	"flashsale/quota/layout"
)

// Region is one region's Redis, as the checker reads it.
type Region struct {
	Name  string
	Redis redis.UniversalClient
}

// ErrUnreadable wraps the error of a region whose Redis could not be read
// (down, or failing over): Check returns it only when the regions it could
// read hold every invariant, so a caller that expects an outage may skip
// it without missing a violation.
var ErrUnreadable = errors.New("region unreadable")

// Check reads every sale under prefix and every region, and returns every
// violation found (nil when all hold); when there is none but a region
// could not be read, an error wrapping ErrUnreadable.
//
// The allocation and the Redis ledgers cannot be read at one instant, so the
// grant bound is checked in the monotone form of DESIGN §4, with reads
// ordered so that a change between them can never look like a violation:
// released_local (read second) >= released_r (read first), and granted_seen
// (read second) <= granted_r (read third). Together they give ceiling <= net
// grant.
func Check(ctx context.Context, cli *clientv3.Client, prefix string, regions []Region) error {
	keys := layout.Keys{Prefix: prefix}
	before, err := readAllocs(ctx, cli, keys)
	if err != nil {
		return err
	}
	var errs, unread []error
	states := map[string]map[string]regionState{} // sale -> region -> state
	for sale := range before {
		states[sale] = map[string]regionState{}
		for _, r := range regions {
			if _, ok := before[sale].Regions[r.Name]; !ok {
				continue
			}
			st, err := readRegion(ctx, r.Redis, sale)
			if err != nil {
				unread = append(unread, fmt.Errorf("sale %s region %s: %w: %w", sale, r.Name, ErrUnreadable, err))
				continue
			}
			states[sale][r.Name] = st
		}
	}
	after, err := readAllocs(ctx, cli, keys)
	if err != nil {
		return err
	}
	for sale, a := range before {
		spec, err := readSpec(ctx, cli, keys, sale)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if b, ok := after[sale]; ok {
			errs = append(errs, checkSale(a, b, spec.PerUserLimit, states[sale]))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.Join(unread...)
}

func readAllocs(ctx context.Context, cli *clientv3.Client, keys layout.Keys) (map[string]*quota.Allocation, error) {
	resp, err := cli.Get(ctx, keys.Allocs(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read allocations: %w", err)
	}
	m := map[string]*quota.Allocation{}
	for _, kv := range resp.Kvs {
		a, err := layout.DecodeAlloc(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		m[a.Sale] = a
	}
	return m, nil
}

func readSpec(ctx context.Context, cli *clientv3.Client, keys layout.Keys, sale string) (layout.SaleSpec, error) {
	r, err := cli.Get(ctx, keys.Sale(sale))
	if err != nil {
		return layout.SaleSpec{}, fmt.Errorf("read sale %s: %w", sale, err)
	}
	if len(r.Kvs) == 0 {
		return layout.SaleSpec{}, fmt.Errorf("allocation for sale %s has no sale spec", sale)
	}
	return layout.DecodeSale(r.Kvs[0].Key, r.Kvs[0].Value)
}

// checkSale checks one sale: before and after are its allocation read before
// and after the regions' states.
func checkSale(before, after *quota.Allocation, perUserLimit int64, states map[string]regionState) error {
	var errs []error
	for _, a := range []*quota.Allocation{before, after} {
		if err := a.Check(); err != nil {
			errs = append(errs, fmt.Errorf("sale %s: %w", a.Sale, err))
		}
	}
	var used int64
	users := map[string]int64{}
	for _, name := range before.RegionNames() {
		st, ok := states[name]
		if !ok {
			continue
		}
		used += st.sold + st.reserved
		released, granted := before.Regions[name].Released, before.Regions[name].Granted
		if ra, ok := after.Regions[name]; ok {
			granted = ra.Granted
		}
		if !st.halted && (st.releasedLocal < released || st.grantedSeen > granted) {
			errs = append(errs, fmt.Errorf("I2: sale %s region %s: granted_seen %d (granted_r %d), released_local %d (released_r %d): ceiling %d above net grant",
				before.Sale, name, st.grantedSeen, granted, st.releasedLocal, released, st.grantedSeen-st.releasedLocal))
		}
		if st.active != st.reserved || st.confirmed != st.sold {
			errs = append(errs, fmt.Errorf("I4: sale %s region %s: counters reserved %d sold %d, reservations active %d confirmed %d",
				before.Sale, name, st.reserved, st.sold, st.active, st.confirmed))
		}
		if len(st.userMismatch) > 0 {
			errs = append(errs, fmt.Errorf("I3: sale %s region %s: per-user hash disagrees with reservations: %v", before.Sale, name, st.userMismatch))
		}
		for u, n := range st.holdings {
			users[u] += n
		}
	}
	if used > before.Total {
		errs = append(errs, fmt.Errorf("I1: sale %s: sold + reserved %d > total %d", before.Sale, used, before.Total))
	}
	for u, n := range users {
		if n > perUserLimit {
			errs = append(errs, fmt.Errorf("I3: sale %s: user %s holds %d > limit %d", before.Sale, u, n, perUserLimit))
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

// snapshot reads a sale's ledger, per-user hash and every reservation's
// state and user in one script, so the checker sees one consistent moment
// even while buyers are buying. It reads every reservation: for tests and
// checks, not the hot path. Reservation ids are opaque: the req hash
// (requestId -> reservation id, never trimmed) lists them all.
var snapshot = redis.NewScript(`
local ledger = redis.call('HGETALL', KEYS[1])
local users = redis.call('HGETALL', KEYS[2])
local resv = {}
for _, id in ipairs(redis.call('HVALS', KEYS[3])) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'state', 'user')
  resv[#resv + 1] = r[1] or ''
  resv[#resv + 1] = r[2] or ''
end
return {ledger, users, resv}
`)

func readRegion(ctx context.Context, rdb redis.UniversalClient, sale string) (regionState, error) {
	st := regionState{holdings: map[string]int64{}}
	prefix := layout.ResvKey(sale, "")
	v, err := snapshot.Run(ctx, rdb, []string{layout.SaleKey(sale, "ledger"), layout.SaleKey(sale, "users"), layout.SaleKey(sale, "req")}, prefix).Slice()
	if err != nil {
		return st, err
	}
	h, users := pairs(v[0]), pairs(v[1])
	num := func(f string) int64 { n, _ := strconv.ParseInt(h[f], 10, 64); return n }
	st.grantedSeen, st.releasedLocal = num("granted_seen"), num("released_local")
	st.sold, st.reserved, st.halted = num("sold"), num("reserved"), num("halted") == 1
	resv, _ := v[2].([]any)
	for i := 0; i+1 < len(resv); i += 2 {
		state, user := resv[i].(string), resv[i+1].(string)
		switch state {
		case "active":
			st.active++
			st.holdings[user]++
		case "confirmed":
			st.confirmed++
			st.holdings[user]++
		}
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

// pairs turns a flat HGETALL reply from a script into a map.
func pairs(v any) map[string]string {
	flat, _ := v.([]any)
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		m[k] = val
	}
	return m
}
