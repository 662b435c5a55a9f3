package orders

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/testwait"
	"flashsale/quota"
	"flashsale/quota/layout"
)

// genEvents drives the pure ledger (the contract of the Lua scripts) with
// random reserve, confirm, cancel, extend and expiry until it made n
// reservations, and returns the order events the scripts would have
// appended, in stream order, with the final state of every reservation.
func genEvents(sale, region string, n int, seed uint64) ([]Event, map[string]Order) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	l := quota.NewLedger()
	if _, err := l.ApplyGrant(1, int64(n)); err != nil {
		panic(err)
	}
	now := int64(1_700_000_000_000)
	const ttl = 3_000
	users := n * 3 / 4 // fewer users than reservations: some reserve again after an end
	var evs []Event
	var active []string
	pos := map[string]int{}
	drop := func(id string) {
		i := pos[id]
		last := active[len(active)-1]
		active[i], pos[last] = last, i
		active = active[:len(active)-1]
		delete(pos, id)
	}
	emit := func(typ, id string, expires int64) {
		r := l.Resv[id]
		evs = append(evs, Event{Type: typ, Sale: sale, Region: region, Resv: id, User: r.User, Req: r.RequestID, At: now, ExpiresAt: expires})
	}
	made := 0
	for step := 0; made < n; step++ {
		now += int64(1 + rng.IntN(4))
		// The sweeper runs every 50 steps, as the expiry loop runs on a
		// timer (and Ledger.Expire scans every reservation).
		if step%50 == 0 {
			for _, id := range l.Expire(now, 1000) {
				drop(id)
				emit(TypeExpired, id, 0)
			}
		}
		p := rng.IntN(100)
		switch {
		case p < 50 || len(active) == 0:
			u := "u" + strconv.Itoa(rng.IntN(users))
			// Ids as opaque as the seller's ULIDs, unique across regions.
			id := region + "-" + strconv.FormatUint(seed, 36) + "-" + strconv.Itoa(step)
			r, out, err := l.Reserve(0, id, u, "req-"+strconv.Itoa(made)+"-"+u, now, ttl, 1)
			if err != nil {
				panic(err)
			}
			if out == quota.Reserved {
				made++
				active = append(active, r.ID)
				pos[r.ID] = len(active) - 1
				emit(TypeReserved, r.ID, r.ExpiresAt)
			}
		case p < 75:
			id := active[rng.IntN(len(active))]
			if err := l.Confirm(id); err != nil {
				panic(err)
			}
			drop(id)
			emit(TypeConfirmed, id, 0)
		case p < 90:
			id := active[rng.IntN(len(active))]
			if err := l.Cancel(id); err != nil {
				panic(err)
			}
			drop(id)
			emit(TypeCancelled, id, 0)
		default:
			id := active[rng.IntN(len(active))]
			l.Resv[id].ExpiresAt = now + ttl
			emit(TypeExtended, id, now+ttl)
		}
	}
	want := map[string]Order{}
	for id, r := range l.Resv {
		st := map[quota.ResvState]State{quota.Active: Reserved, quota.Confirmed: Confirmed, quota.Cancelled: Cancelled, quota.Expired: Expired}[r.State]
		want[id] = Order{Sale: sale, Region: region, Resv: id, User: r.User, State: st, ExpiresAt: msTime(r.ExpiresAt)}
	}
	return evs, want
}

// xaddAll appends events with plain XADD in the stream format of the Lua
// scripts, pipelined.
func xaddAll(t testing.TB, rdb *redis.Client, evs []Event) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(evs); i += 500 {
		pipe := rdb.Pipeline()
		for _, e := range evs[i:min(i+500, len(evs))] {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: layout.StreamKey(e.Sale), Values: e.Fields()})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("XADD: %v", err)
		}
	}
}

// checkRows fails unless the store holds exactly want for the sale.
func checkRows(t testing.TB, s Store, sale string, want map[string]Order) {
	t.Helper()
	got, err := s.Orders(context.Background(), sale, "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	bad := 0
	for _, o := range got {
		if seen[o.Resv] {
			t.Errorf("duplicate row for reservation %s", o.Resv)
		}
		seen[o.Resv] = true
		w, ok := want[o.Resv]
		if !ok {
			t.Errorf("unexpected row %+v", o)
			bad++
		} else if o.State != w.State || o.User != w.User || o.Region != w.Region || !o.ExpiresAt.Equal(w.ExpiresAt) {
			t.Errorf("resv %s: got %s/%s/%s exp %v, want %s/%s/%s exp %v", o.Resv, o.State, o.User, o.Region, o.ExpiresAt, w.State, w.User, w.Region, w.ExpiresAt)
			bad++
		}
		if bad > 10 {
			t.FailNow()
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("missing row for reservation %s", id)
			bad++
			if bad > 10 {
				t.FailNow()
			}
		}
	}
}

// eventually polls cond until it holds or a generous deadline passes; the
// deadline only guards against hangs, it is not a speed assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 90*time.Second, cond)
}
