package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/redistest"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// newTestStore starts a real redis-server and returns a Store on it.
func newTestStore(t testing.TB) (*Store, *redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	s := NewStore(rdb, "eu")
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, srv, rdb
}

var ledgerErrors = []error{quota.ErrStaleFence, quota.ErrNotActive, quota.ErrNoSuchResv, quota.ErrNegative, quota.ErrResvExists,
	quota.ErrHalted, quota.ErrStaleEpoch, quota.ErrNewPrimary}

// sameErr says whether the store's error answers as the ledger's did.
func sameErr(store, model error) bool {
	if (store == nil) != (model == nil) {
		return false
	}
	for _, e := range ledgerErrors {
		if errors.Is(store, e) != errors.Is(model, e) {
			return false
		}
	}
	return true
}

// modelRun drives one sale on both the Store and a quota.Ledger and fails
// the test at the first answer or counter that differs.
type modelRun struct {
	t      *testing.T
	ctx    context.Context
	s      *Store
	srv    *redistest.Server
	l      *quota.Ledger
	sale   string
	now    int64 // unix ms
	fence  int64
	epoch  int64 // the seller epoch the sellers pass
	nextRq int
	reqs   []string
	ids    []string // every reservation id handed to a reserve, used or not
	taken  int      // reserves refused for an id in use (quota.ErrResvExists)
	step   int
	trace  []string

	// Confirms and cancels refused on a stopped region (quota.ErrHalted):
	// halted by the agent, or on a primary it has not reconciled.
	fencedHalted, fencedPrimary int
}

func newModelRun(t *testing.T, s *Store, srv *redistest.Server, sale string) *modelRun {
	m := &modelRun{t: t, ctx: context.Background(), s: s, srv: srv, l: quota.NewLedger(), sale: sale, now: 1_700_000_000_000}
	m.l.Primary = m.primary()
	return m
}

// primary reads the server's replication id: the server, not data, so the
// model is told which one it is.
func (m *modelRun) primary() string {
	m.t.Helper()
	c, err := m.s.Counters(m.ctx, m.sale)
	if err != nil || c.Primary == "" {
		m.t.Fatalf("read the primary's replication id: %v (got %q)", err, c.Primary)
	}
	return c.Primary
}

// promote makes the server a new primary with its data intact, as a
// failover to a replica in sync does: a region whose agent set an epoch is
// stopped until it reconciles this one.
func (m *modelRun) promote() {
	m.t.Helper()
	m.srv.Promote()
	m.l.Primary = m.primary()
	m.note("promote: primary %s", m.l.Primary)
}

func (m *modelRun) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("sale %s step %d: %s\ntrace:\n%s", m.sale, m.step, fmt.Sprintf(format, args...), traceTail(m.trace))
}

func traceTail(tr []string) string {
	if len(tr) > 30 {
		tr = tr[len(tr)-30:]
	}
	out := ""
	for _, s := range tr {
		out += "  " + s + "\n"
	}
	return out
}

func (m *modelRun) note(format string, args ...any) {
	m.step++
	m.trace = append(m.trace, fmt.Sprintf(format, args...))
}

// newID is the reservation id of the next reserve: a new ULID, as the
// seller makes them, both implementations being given the same one.
func (m *modelRun) newID() string {
	id := NewReservationID(time.UnixMilli(m.now))
	m.ids = append(m.ids, id)
	return id
}

func (m *modelRun) reserve(id, user, req string, ttl, limit int64) {
	m.t.Helper()
	m.note("reserve id=%s user=%s req=%s now=%d ttl=%d limit=%d epoch=%d", id, user, req, m.now, ttl, limit, m.epoch)
	got, err := m.s.Reserve(m.ctx, m.sale, ReserveRequest{User: user, RequestID: req, ID: id, Now: time.UnixMilli(m.now), TTL: time.Duration(ttl) * time.Millisecond, PerUserLimit: limit, Epoch: m.epoch})
	r, o, werr := m.l.Reserve(m.epoch, id, user, req, m.now, ttl, limit)
	m.compareReserve(got, err, ReserveResult{Outcome: o, Reservation: r}, werr)
}

func (m *modelRun) compareReserve(got ReserveResult, err error, want ReserveResult, werr error) {
	m.t.Helper()
	if !sameErr(err, werr) {
		m.fail("reserve: store %v, ledger %v", err, werr)
	}
	if errors.Is(werr, quota.ErrResvExists) {
		m.taken++
	}
	if werr == nil && got != want {
		m.fail("reserve answered %+v, ledger %+v", got, want)
	}
}

func (m *modelRun) reserveBatch(rs []ReserveRequest) {
	m.t.Helper()
	m.note("reserve batch of %d: %+v", len(rs), rs)
	got, errs, err := m.s.reserveBatch(m.ctx, m.sale, rs)
	if err != nil {
		m.fail("reserve batch: %v", err)
	}
	for i, r := range rs {
		res, o, werr := m.l.Reserve(r.Epoch, r.ID, r.User, r.RequestID, r.Now.UnixMilli(), r.TTL.Milliseconds(), r.PerUserLimit)
		m.compareReserve(got[i], errs[i], ReserveResult{Outcome: o, Reservation: res}, werr)
	}
}

func (m *modelRun) confirm(id string) {
	m.t.Helper()
	m.note("confirm %s", id)
	err := m.s.Confirm(m.ctx, m.sale, id, time.UnixMilli(m.now))
	m.compareFinish("confirm", id, err, m.l.Confirm(id))
}

func (m *modelRun) cancel(id string) {
	m.t.Helper()
	m.note("cancel %s", id)
	err := m.s.Cancel(m.ctx, m.sale, id, time.UnixMilli(m.now))
	m.compareFinish("cancel", id, err, m.l.Cancel(id))
}

func (m *modelRun) compareFinish(op, id string, err, want error) {
	m.t.Helper()
	if !sameErr(err, want) {
		m.fail("%s %s: store %v, ledger %v", op, id, err, want)
	}
	switch {
	case !errors.Is(want, quota.ErrHalted):
	case m.l.Halted:
		m.fencedHalted++
	default:
		m.fencedPrimary++
	}
}

func (m *modelRun) expire(limit int) {
	m.t.Helper()
	m.note("expire now=%d limit=%d", m.now, limit)
	got, err := m.s.Expire(m.ctx, m.sale, time.UnixMilli(m.now), limit)
	if err != nil {
		m.fail("expire: %v", err)
	}
	want := m.l.Expire(m.now, limit)
	if !slices.Equal(got, want) {
		m.fail("expire: store %v, ledger %v", got, want)
	}
}

// extend is not in the ledger: the model here is "refused while stopped;
// an active reservation's expiry becomes max(current, min(until, cap))".
func (m *modelRun) extend(id string, until, limit int64) {
	m.t.Helper()
	m.note("extend %s until=%d max=%d", id, until, limit)
	got, err := m.s.Extend(m.ctx, m.sale, id, time.UnixMilli(until), time.UnixMilli(limit))
	var want error
	wantAt := int64(0)
	switch r, ok := m.l.Resv[id]; {
	case m.l.Stopped():
		want = quota.ErrHalted
	case !ok:
		want = quota.ErrNoSuchResv
	case r.State != quota.Active:
		want, wantAt = quota.ErrNotActive, r.ExpiresAt
	default:
		r.ExpiresAt = max(r.ExpiresAt, min(until, limit))
		wantAt = r.ExpiresAt
	}
	if !sameErr(err, want) {
		m.fail("extend %s: store %v, model %v", id, err, want)
	}
	if want != quota.ErrNoSuchResv && want != quota.ErrHalted && got.UnixMilli() != wantAt {
		m.fail("extend %s: store expiry %d, model %d", id, got.UnixMilli(), wantAt)
	}
}

func (m *modelRun) grant(fence, granted int64) {
	m.t.Helper()
	m.note("grant fence=%d granted=%d", fence, granted)
	got, err := m.s.ApplyGrant(m.ctx, m.sale, fence, granted)
	want, werr := m.l.ApplyGrant(fence, granted)
	if got != want || !sameErr(err, werr) {
		m.fail("apply grant: store (%d, %v), ledger (%d, %v)", got, err, want, werr)
	}
}

func (m *modelRun) release(fence, epoch int64, id string, k, keep int64) {
	m.t.Helper()
	m.note("release fence=%d epoch=%d id=%s k=%d keep=%d", fence, epoch, id, k, keep)
	gm, grl, err := m.s.Release(m.ctx, m.sale, fence, epoch, id, k, keep)
	wm, wrl, werr := m.l.Release(fence, epoch, id, k, keep)
	if gm != wm || grl != wrl || !sameErr(err, werr) {
		m.fail("release: store (%d, %d, %v), ledger (%d, %d, %v)", gm, grl, err, wm, wrl, werr)
	}
}

func (m *modelRun) raiseFloor(fence, rl, sold int64) {
	m.t.Helper()
	m.note("raise floor fence=%d released=%d sold=%d", fence, rl, sold)
	err := m.s.RaiseFloor(m.ctx, m.sale, fence, rl, sold)
	if werr := m.l.RaiseFloor(fence, rl, sold); !sameErr(err, werr) {
		m.fail("raise floor: store %v, ledger %v", err, werr)
	}
}

func (m *modelRun) resume(fence, epoch int64, primary string, granted int64) {
	m.t.Helper()
	m.note("resume fence=%d epoch=%d primary=%s granted=%d", fence, epoch, primary, granted)
	got, err := m.s.Resume(m.ctx, m.sale, fence, epoch, primary, granted)
	if want, werr := m.l.Resume(fence, epoch, primary, granted); got != want || !sameErr(err, werr) {
		m.fail("resume: store (%d, %v), ledger (%d, %v)", got, err, want, werr)
	}
}

func (m *modelRun) setHalted(fence int64, h bool) {
	m.t.Helper()
	m.note("set halted fence=%d halted=%v", fence, h)
	err := m.s.SetHalted(m.ctx, m.sale, fence, h)
	if werr := m.l.SetHalted(fence, h); !sameErr(err, werr) {
		m.fail("set halted: store %v, ledger %v", err, werr)
	}
}

// checkCounters compares the ledger hash with the model.
func (m *modelRun) checkCounters() {
	m.t.Helper()
	c, err := m.s.Counters(m.ctx, m.sale)
	if err != nil {
		m.fail("counters: %v", err)
	}
	l := m.l
	want := Counters{Fence: l.Fence, GrantedSeen: l.GrantedSeen, ReleasedLocal: l.ReleasedLocal, Sold: l.Sold, Reserved: l.Reserved, Halted: l.Halted,
		Epoch: l.Epoch, EpochPrimary: l.EpochPrimary, Primary: l.Primary}
	if c != want {
		m.fail("counters: store %+v, ledger %+v", c, want)
	}
	if c.Available() != l.Available() || c.Ceiling() != l.Ceiling() || c.Stopped() != l.Stopped() {
		m.fail("available/ceiling: store %d/%d, ledger %d/%d", c.Available(), c.Ceiling(), l.Available(), l.Ceiling())
	}
}

// checkAll compares every Redis structure of the sale with the model.
func (m *modelRun) checkAll(rdb *redis.Client) {
	m.t.Helper()
	m.checkCounters()
	ctx := m.ctx
	for id, want := range m.l.Resv {
		got, err := m.s.Reservation(ctx, m.sale, id)
		if err != nil || got != *want {
			m.fail("reservation %s: store (%+v, %v), ledger %+v", id, got, err, *want)
		}
	}
	for _, id := range []string{m.newID(), "never-made"} {
		if _, err := m.s.Reservation(ctx, m.sale, id); !errors.Is(err, quota.ErrNoSuchResv) {
			m.fail("reservation %s never made: %v, want ErrNoSuchResv", id, err)
		}
	}
	hashEq := func(key string, want map[string]string) {
		got, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			m.fail("hgetall %s: %v", key, err)
		}
		if len(got) != len(want) {
			m.fail("%s: store %v, ledger %v", key, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				m.fail("%s[%s]: store %q, ledger %q", key, k, got[k], v)
			}
		}
	}
	users := map[string]string{}
	for u, n := range m.l.Users {
		if n != 0 {
			users[u] = strconv.FormatInt(n, 10)
		}
	}
	hashEq(layout.SaleKey(m.sale, "users"), users)
	hashEq(layout.SaleKey(m.sale, "req"), m.l.ByReq)
	rel := map[string]string{}
	for id, n := range m.l.Releases {
		rel[id] = strconv.FormatInt(n, 10)
	}
	hashEq(layout.SaleKey(m.sale, "releases"), rel)

	zs, err := rdb.ZRangeWithScores(ctx, layout.SaleKey(m.sale, "expiry"), 0, -1).Result()
	if err != nil {
		m.fail("expiry: %v", err)
	}
	active := 0
	for _, r := range m.l.Resv {
		if r.State == quota.Active {
			active++
		}
	}
	if len(zs) != active {
		m.fail("expiry set holds %d, ledger has %d active", len(zs), active)
	}
	for _, z := range zs {
		r := m.l.Resv[z.Member.(string)]
		if r == nil || r.State != quota.Active || int64(z.Score) != r.ExpiresAt {
			m.fail("expiry entry %v does not match ledger %+v", z, r)
		}
	}
	checkStream(m.t, rdb, m.sale, "eu", m.l.Resv)
}

// checkStream checks the order stream against the final reservations:
// one reserved event each, one terminal event per ended reservation
// matching its state, nothing else but extended events.
func checkStream(t testing.TB, rdb *redis.Client, sale, region string, resv map[string]*quota.Reservation) {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), layout.SaleKey(sale, "orders"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	reserved := map[string]int{}
	ended := map[string]string{}
	for _, msg := range msgs {
		v := msg.Values
		id, _ := v["resv"].(string)
		r := resv[id]
		if r == nil {
			t.Fatalf("stream event %v names an unknown reservation", v)
		}
		if v["sale"] != sale || v["region"] != region || v["user"] != r.User || v["req"] != r.RequestID || v["at"] == nil {
			t.Fatalf("stream event %v does not match reservation %+v", v, *r)
		}
		switch typ := v["type"].(string); typ {
		case "reserved":
			reserved[id]++
			if v["expiresAt"] == nil {
				t.Fatalf("reserved event %v has no expiresAt", v)
			}
		case "confirmed", "cancelled", "expired":
			if ended[id] != "" {
				t.Fatalf("reservation %s ended twice: %s then %s", id, ended[id], typ)
			}
			if reserved[id] != 1 {
				t.Fatalf("reservation %s %s before it was reserved", id, typ)
			}
			ended[id] = typ
		case "extended":
			if ended[id] != "" || reserved[id] != 1 {
				t.Fatalf("extended event for a reservation that is not active: %v", v)
			}
		default:
			t.Fatalf("unknown event type in %v", v)
		}
	}
	names := map[quota.ResvState]string{quota.Confirmed: "confirmed", quota.Cancelled: "cancelled", quota.Expired: "expired"}
	for id, r := range resv {
		if reserved[id] != 1 {
			t.Fatalf("reservation %s has %d reserved events", id, reserved[id])
		}
		if ended[id] != names[r.State] {
			t.Fatalf("reservation %s is %v but its terminal event is %q", id, r.State, ended[id])
		}
	}
}

func (m *modelRun) randomReq(rng *rand.Rand) string {
	if len(m.reqs) > 0 && rng.IntN(10) < 3 {
		return m.reqs[rng.IntN(len(m.reqs))]
	}
	m.nextRq++
	r := "rq" + strconv.Itoa(m.nextRq)
	m.reqs = append(m.reqs, r)
	return r
}

func (m *modelRun) randomFence(rng *rand.Rand) int64 {
	f := m.l.Fence + int64(rng.IntN(4)) - 1 // sometimes stale, sometimes newer
	return max(0, f)
}

// randomResv is an id handed out before (used or not) or a new one.
func (m *modelRun) randomResv(rng *rand.Rand) string {
	if len(m.ids) == 0 || rng.IntN(8) == 0 {
		return m.newID()
	}
	return m.ids[rng.IntN(len(m.ids))]
}

// randomNewID is mostly a new id, sometimes one handed out before, which
// the store must refuse when it is in use (quota.ErrResvExists).
func (m *modelRun) randomNewID(rng *rand.Rand) string {
	if len(m.ids) > 0 && rng.IntN(6) == 0 {
		if used := m.usedIDs(); len(used) > 0 && rng.IntN(2) == 0 {
			return used[rng.IntN(len(used))]
		}
		return m.ids[rng.IntN(len(m.ids))]
	}
	return m.newID()
}

// usedIDs are the ids of the reservations made, in a stable order.
func (m *modelRun) usedIDs() []string {
	var used []string
	for _, id := range m.ids {
		if m.l.Resv[id] != nil {
			used = append(used, id)
		}
	}
	return used
}

func (m *modelRun) randomStep(rng *rand.Rand) {
	m.t.Helper()
	users := []string{"ann", "bob", "cat", "dan", "eve", "fay"}
	// Sellers mostly know the current epoch; sometimes a stale or unknown one.
	m.epoch = m.l.Epoch
	if rng.IntN(6) == 0 {
		m.epoch = int64(rng.IntN(3))
	}
	switch p := rng.IntN(100); {
	case p < 30:
		m.reserve(m.randomNewID(rng), users[rng.IntN(len(users))], m.randomReq(rng), 1000+int64(rng.IntN(4))*500, 1+int64(rng.IntN(2)))
	case p < 38:
		rs := make([]ReserveRequest, 1+rng.IntN(6))
		for i := range rs {
			rs[i] = ReserveRequest{User: users[rng.IntN(len(users))], RequestID: m.randomReq(rng), ID: m.randomNewID(rng), Now: time.UnixMilli(m.now),
				TTL: time.Duration(1000+rng.IntN(3)*500) * time.Millisecond, PerUserLimit: 1 + int64(rng.IntN(2)), Epoch: m.epoch}
		}
		m.reserveBatch(rs)
	case p < 46:
		m.confirm(m.randomResv(rng))
	case p < 54:
		m.cancel(m.randomResv(rng))
	case p < 62:
		m.expire(rng.IntN(4))
	case p < 72:
		m.now += int64(rng.IntN(1500))
		m.note("time now=%d", m.now)
	case p < 78:
		m.extend(m.randomResv(rng), m.now+int64(rng.IntN(4000)), m.now+int64(rng.IntN(4000)))
	case p < 86:
		m.grant(m.randomFence(rng), int64(rng.IntN(12)))
	case p < 93:
		m.release(m.randomFence(rng), m.epoch, "rel"+strconv.Itoa(rng.IntN(4)), int64(rng.IntN(6))-1, int64(rng.IntN(4))-1)
	case p < 95:
		m.raiseFloor(m.randomFence(rng), int64(rng.IntN(5)), int64(rng.IntN(5)))
	case p < 96:
		primary := m.l.Primary
		if rng.IntN(4) == 0 {
			primary = "another"
		}
		m.resume(m.randomFence(rng), 1+int64(rng.IntN(3)), primary, int64(rng.IntN(12)))
	case p < 97:
		m.promote()
	default:
		m.setHalted(m.randomFence(rng), rng.IntN(3) == 0)
	}
	m.checkCounters()
}

// TestStoreModelRandom replays seeded random operation sequences on the
// Store and on quota.Ledger and compares every answer and the counters
// after each step, then every Redis structure at the end.
func TestStoreModelRandom(t *testing.T) {
	s, srv, rdb := newTestStore(t)
	seen := map[quota.ResvState]int{}
	taken, halted, primary := 0, 0, 0
	for seed := range uint64(24) {
		m := newModelRun(t, s, srv, "rand"+strconv.FormatUint(seed, 10))
		rng := rand.New(rand.NewPCG(seed, 42))
		for range 250 {
			m.randomStep(rng)
		}
		m.checkAll(rdb)
		taken += m.taken
		halted += m.fencedHalted
		primary += m.fencedPrimary
		for _, r := range m.l.Resv {
			seen[r.State]++
		}
	}
	// The sequences must reach every end of a reservation, or they test too little.
	for _, st := range []quota.ResvState{quota.Active, quota.Confirmed, quota.Cancelled, quota.Expired} {
		if seen[st] < 10 {
			t.Fatalf("only %d reservations ended %v over all seeds: %v", seen[st], st, seen)
		}
	}
	if taken < 10 {
		t.Fatalf("only %d reserves were refused for an id in use, want at least 10", taken)
	}
	if halted < 10 || primary < 10 {
		t.Fatalf("confirms and cancels refused %d times while halted, %d on a primary not reconciled: want at least 10 each", halted, primary)
	}
	t.Logf("final reservation states over all seeds: %v; %d reserves refused for an id in use; confirms and cancels refused %d times while halted, %d on a primary not reconciled",
		seen, taken, halted, primary)
}

// TestStoreModelScenario walks a fixed story through both implementations.
func TestStoreModelScenario(t *testing.T) {
	s, srv, rdb := newTestStore(t)
	m := newModelRun(t, s, srv, "story")
	// The story names its reservation ids; an id handed to a request that
	// makes nothing (x…) stays unused.
	m.reserve("x0", "ann", "a1", 1000, 1) // nothing granted: sold out
	m.grant(1, 3)
	m.grant(1, 2) // smaller grant: ceiling stays 3
	m.reserve("1", "ann", "a1", 1000, 1)
	m.reserve("x1", "ann", "a1", 1000, 1) // retry: duplicate, reservation 1
	m.reserve("x2", "ann", "a2", 1000, 1) // user limit
	m.reserve("2", "ann", "a2", 1000, 2)  // a larger limit lets her buy a second
	m.reserve("3", "bob", "b1", 1000, 1)
	m.reserve("x3", "cat", "c1", 1000, 1) // sold out
	m.confirm("1")
	m.confirm("1") // repeat: ok, nothing changes
	m.cancel("1")  // confirmed: not active
	m.cancel("2")
	m.cancel("2")
	m.confirm("2")  // cancelled: not active
	m.confirm("9")  // no such reservation
	m.confirm("x0") // never made: no such reservation
	m.now += 500
	m.extend("3", m.now+5000, m.now+1000) // capped at now+1000
	m.now += 600
	m.expire(10) // nothing due: 3 was extended
	m.reserve("4", "cat", "c1", 1000, 1)
	m.now += 2000
	m.expire(1) // 3 first (earlier expiry)
	m.expire(1) // then 4
	m.confirm("3")
	m.reserve("x4", "ann", "a1", 1000, 1) // duplicate returns the confirmed reservation
	m.reserve("2", "eve", "e1", 1000, 1)  // id in use (cancelled): refused, never overwritten
	m.reserve("1", "eve", "e1", 1000, 1)  // id in use (confirmed): refused
	m.reserve(m.newID(), "eve", "e1", 1000, 1)
	m.release(2, 0, "r0", 10, 5) // keeps 5: nothing to give yet
	m.release(2, 0, "r1", 10, 0) // fence 2 supersedes 1; releases the free unit
	m.release(2, 0, "r1", 10, 0) // repeat: same m
	m.release(1, 0, "r2", 10, 0) // stale fence
	m.grant(1, 100)              // stale fence: no change
	m.setHalted(2, true)
	m.reserve("x5", "dan", "d1", 1000, 1) // halted
	m.raiseFloor(3, 1, 5)
	m.setHalted(3, false)
	m.reserve("x5", "dan", "d1", 1000, 1) // sold out: sold raised to 5
	m.resume(3, 2, "elsewhere", 9)        // a failover since the agent read the primary: refused
	m.resume(3, 2, m.l.Primary, 2)        // the agent reconciled: seller epoch 2 on this primary
	m.reserve("x6", "dan", "d2", 1000, 1) // the sellers' epoch 0 is stale now
	m.release(3, 1, "r5", 1, 0)           // so is the agent's 1
	m.epoch = 2
	m.release(3, 2, "r5", 1, 0)
	m.release(3, 0, "r3", -1, 0) // negative
	m.release(3, 0, "r4", 1, -1) // negative keep
	m.grant(3, 20)
	m.setHalted(3, true)
	m.release(3, 2, "r6", 1, 0) // halted: refused
	m.release(3, 2, "r5", 1, 0) // a repeat is answered even then
	m.setHalted(3, false)
	at := time.UnixMilli(m.now)
	m.reserveBatch([]ReserveRequest{
		{User: "fay", RequestID: "f1", ID: "b", Now: at, TTL: time.Second, PerUserLimit: 1, Epoch: 2},
		{User: "gus", RequestID: "g1", ID: "b", Now: at, TTL: time.Second, PerUserLimit: 1, Epoch: 2}, // made earlier in this call: refused
		{User: "gus", RequestID: "g1", ID: "4", Now: at, TTL: time.Second, PerUserLimit: 1, Epoch: 2}, // in use before the call: refused
		{User: "gus", RequestID: "g1", ID: "c", Now: at, TTL: time.Second, PerUserLimit: 1, Epoch: 1}, // stale epoch
		{User: "fay", RequestID: "f1", ID: "d", Now: at, TTL: time.Second, PerUserLimit: 1, Epoch: 2}, // duplicate of b
	})
	// Confirm and cancel are fenced as reserve is: while the region is
	// stopped they are refused whatever the reservation, even one the
	// server does not hold (a write a failover lost reads so).
	m.setHalted(3, true)
	m.confirm("b")
	m.cancel("b")
	m.confirm("never-made")
	m.setHalted(3, false)
	m.promote() // a failover: a primary the agent has not reconciled
	m.confirm("b")
	m.cancel("b")
	m.cancel("never-made")
	m.reserve("x7", "hal", "h1", 1000, 1)
	m.resume(3, 3, m.l.Primary, 20) // reconciled
	m.epoch = 3
	m.confirm("b")
	m.cancel("never-made") // no such reservation, now that this can be told
	m.checkAll(rdb)
}
