package orders

import (
	"flashsale/quota/layout"

	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Kinds of Diff.
const (
	// MissingInSQL: Redis has the reservation, SQL has no row. Replay fixes it.
	MissingInSQL = "missing_in_sql"
	// SQLBehind: Redis ended the reservation, SQL still says reserved.
	// Replay fixes it.
	SQLBehind = "sql_behind"
	// SQLAhead: SQL holds a terminal state Redis does not (Redis lost
	// writes). Never repaired here: the region must halt and raise its
	// floor from SQL (DESIGN §4), not the other way round.
	SQLAhead = "sql_ahead"
	// StateConflict: both ended the reservation, differently.
	StateConflict = "state_conflict"
	// UserMismatch: Redis and SQL disagree on the buyer. Reservation ids
	// are ULIDs, never reused, so this is corruption (numeric ids, before
	// ULIDs, were reused when Redis lost writes and rebuilt its sequence).
	UserMismatch = "user_mismatch"
	// MissingInRedis: SQL has a row Redis does not know (Redis lost writes).
	MissingInRedis = "missing_in_redis"
	// Counter: a counter disagrees with the reservations (Resv is the
	// counter's name: sold, reserved, or users:<user>).
	Counter = "counter"
)

// Diff is one disagreement between Redis and SQL.
type Diff struct {
	Kind  string
	Resv  string // reservation id, or the counter's name
	Redis string // what Redis says
	SQL   string // what SQL says
}

func (d Diff) String() string {
	return fmt.Sprintf("%s %s: redis=%s sql=%s", d.Kind, d.Resv, d.Redis, d.SQL)
}

// Report is the result of Reconcile.
type Report struct {
	Sale, Region string
	Reservations int   // reservation hashes in Redis
	Rows         int   // order rows in SQL for the sale and region
	Lag          int64 // stream entries the SQL consumer group has not acknowledged; -1 if unknown
	Diffs        []Diff
	// With repair: entries replayed from the stream, and the diffs found
	// before the replay (Diffs is then what is left after it).
	Replayed    int
	DiffsBefore []Diff
}

// ReconcileOptions says what to compare and whether to repair.
type ReconcileOptions struct {
	Sale, Region string
	// Repair replays the whole order stream into SQL. It is safe: every
	// write is an idempotent forward-only upsert, so it never deletes a row
	// nor moves a confirmed (paid) order back.
	Repair bool
	Group  string // consumer group whose lag to report; "" is DefaultConfig's
}

// Reconcile compares a sale's Redis state in one region (ledger counters,
// per-user counts, every reservation hash) with its SQL rows and returns
// the differences. Entries still in flight in the stream (Report.Lag > 0)
// show up as MissingInSQL or SQLBehind until the consumer writes them.
func Reconcile(ctx context.Context, rdb redis.UniversalClient, store Store, opt ReconcileOptions) (Report, error) {
	if opt.Sale == "" || opt.Region == "" {
		return Report{}, fmt.Errorf("reconcile: sale (%q) and region (%q) are required", opt.Sale, opt.Region)
	}
	if opt.Group == "" {
		opt.Group = DefaultConfig().Group
	}
	rep, err := compare(ctx, rdb, store, opt)
	if err != nil || !opt.Repair {
		return rep, err
	}
	n, err := Replay(ctx, rdb, store, opt.Sale)
	if err != nil {
		return rep, err
	}
	after, err := compare(ctx, rdb, store, opt)
	if err != nil {
		return rep, err
	}
	after.Replayed, after.DiffsBefore = n, rep.Diffs
	return after, nil
}

// Replay writes every entry of a sale's order stream to the store, in
// batches, and returns how many entries it read. It does not touch the
// consumer group: entries the consumer has not acknowledged yet will be
// written again, harmlessly.
func Replay(ctx context.Context, rdb redis.UniversalClient, store Store, sale string) (int, error) {
	stream := layout.StreamKey(sale)
	from, n := "-", 0
	for {
		msgs, err := rdb.XRangeN(ctx, stream, from, "+", 1000).Result()
		if err != nil {
			return n, fmt.Errorf("replay: XRANGE %s: %w", stream, err)
		}
		if len(msgs) == 0 {
			return n, nil
		}
		b, _ := toBatch(sale, msgs)
		if err := store.Apply(ctx, b); err != nil {
			return n, fmt.Errorf("replay %s: %w", stream, err)
		}
		n += len(msgs)
		from = "(" + msgs[len(msgs)-1].ID
	}
}

type redisResv struct{ user, state string }

func compare(ctx context.Context, rdb redis.UniversalClient, store Store, opt ReconcileOptions) (Report, error) {
	rep := Report{Sale: opt.Sale, Region: opt.Region, Lag: -1}
	if lag, err := Lag(ctx, rdb, layout.StreamKey(opt.Sale), opt.Group); err == nil {
		rep.Lag = lag
	}
	ledger, err := rdb.HMGet(ctx, layout.SaleKey(opt.Sale, "ledger"), "sold", "reserved").Result()
	if err != nil {
		return rep, fmt.Errorf("reconcile: read ledger: %w", err)
	}
	sold, reserved := hnum(ledger[0]), hnum(ledger[1])
	users, err := rdb.HGetAll(ctx, layout.SaleKey(opt.Sale, "users")).Result()
	if err != nil {
		return rep, fmt.Errorf("reconcile: read users: %w", err)
	}
	resv, err := reservations(ctx, rdb, opt.Sale)
	if err != nil {
		return rep, err
	}
	rows, err := store.Orders(ctx, opt.Sale, opt.Region)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	rep.Reservations, rep.Rows = len(resv), len(rows)

	byID := make(map[string]Order, len(rows))
	var sqlConfirmed, sqlReserved int64
	sqlLive := map[string]int64{}
	for _, o := range rows {
		byID[o.Resv] = o
		switch o.State {
		case Confirmed:
			sqlConfirmed++
			sqlLive[o.User]++
		case Reserved:
			sqlReserved++
			sqlLive[o.User]++
		}
	}
	var diffs []Diff
	var redisConfirmed, redisActive int64
	live := map[string]int64{}
	for id, r := range resv {
		switch r.state {
		case "confirmed":
			redisConfirmed++
			live[r.user]++
		case "active":
			redisActive++
			live[r.user]++
		}
		o, ok := byID[id]
		if !ok {
			diffs = append(diffs, Diff{Kind: MissingInSQL, Resv: id, Redis: r.state})
			continue
		}
		if o.User != r.user {
			diffs = append(diffs, Diff{Kind: UserMismatch, Resv: id, Redis: r.user, SQL: o.User})
		}
		want := redisToSQL(r.state)
		switch {
		case want == o.State:
		case o.State == Reserved:
			diffs = append(diffs, Diff{Kind: SQLBehind, Resv: id, Redis: r.state, SQL: string(o.State)})
		case want == Reserved:
			diffs = append(diffs, Diff{Kind: SQLAhead, Resv: id, Redis: r.state, SQL: string(o.State)})
		default:
			diffs = append(diffs, Diff{Kind: StateConflict, Resv: id, Redis: r.state, SQL: string(o.State)})
		}
	}
	for id, o := range byID {
		if _, ok := resv[id]; !ok {
			diffs = append(diffs, Diff{Kind: MissingInRedis, Resv: id, SQL: string(o.State)})
		}
	}
	counter := func(name string, redisVals string, sqlVal int64, ok bool) {
		if !ok {
			diffs = append(diffs, Diff{Kind: Counter, Resv: name, Redis: redisVals, SQL: strconv.FormatInt(sqlVal, 10)})
		}
	}
	counter("sold", fmt.Sprintf("ledger %d, reservations %d", sold, redisConfirmed), sqlConfirmed,
		sold == redisConfirmed && sold == sqlConfirmed)
	counter("reserved", fmt.Sprintf("ledger %d, reservations %d", reserved, redisActive), sqlReserved,
		reserved == redisActive && reserved == sqlReserved)
	for u := range union(users, live, sqlLive) {
		h, _ := strconv.ParseInt(users[u], 10, 64)
		counter("users:"+u, fmt.Sprintf("hash %d, reservations %d", h, live[u]), sqlLive[u], h == live[u] && h == sqlLive[u])
	}
	sort.Slice(diffs, func(i, j int) bool {
		if diffs[i].Kind != diffs[j].Kind {
			return diffs[i].Kind < diffs[j].Kind
		}
		return diffs[i].Resv < diffs[j].Resv
	})
	rep.Diffs = diffs
	return rep, nil
}

// reservations reads the user and state of every reservation of a sale in
// one region. Ids are opaque (ULIDs), so they cannot be counted up to; the
// req hash maps every requestId to its reservation and is never trimmed,
// so its values list every reservation without a SCAN of the keyspace
// (ledgers from before ULIDs, with numeric ids, are listed the same way).
func reservations(ctx context.Context, rdb redis.UniversalClient, sale string) (map[string]redisResv, error) {
	resv := map[string]redisResv{}
	var cursor uint64
	for {
		kv, next, err := rdb.HScan(ctx, layout.SaleKey(sale, "req"), cursor, "*", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("reconcile: read reservation ids: %w", err)
		}
		pipe := rdb.Pipeline()
		cmds := map[string]*redis.SliceCmd{}
		for i := 1; i < len(kv); i += 2 {
			if id := kv[i]; cmds[id] == nil {
				cmds[id] = pipe.HMGet(ctx, layout.SaleKey(sale, "resv:"+id), "user", "state")
			}
		}
		if len(cmds) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("reconcile: read reservations: %w", err)
			}
		}
		for id, c := range cmds {
			v := c.Val()
			if len(v) == 2 && v[1] != nil {
				u, _ := v[0].(string)
				s, _ := v[1].(string)
				resv[id] = redisResv{user: u, state: s}
			}
		}
		if cursor = next; cursor == 0 {
			return resv, nil
		}
	}
}

func redisToSQL(state string) State {
	if state == "active" {
		return Reserved
	}
	return State(state)
}

func hnum(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func union(a map[string]string, more ...map[string]int64) map[string]bool {
	out := make(map[string]bool, len(a))
	for k := range a {
		out[k] = true
	}
	for _, m := range more {
		for k := range m {
			out[k] = true
		}
	}
	return out
}
