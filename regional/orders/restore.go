package orders

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"flashsale/quota"
	"flashsale/regional/redisstore"
)

// ErrNotHalted means Restore was asked to rebuild a sale that is selling
// in this region: a buyer's retry could take a requestId before the
// reservation it names is put back, and hold two units.
var ErrNotHalted = errors.New("restore: the sale is not halted in this region: halt it first (SetHalted), as the agent does before reconciling")

// RestoreResult says what Restore found and did.
type RestoreResult struct {
	Sale, Region string
	// Witnessed counts the reservations the witnesses know: the order
	// stream left in Redis, the SQL order store, and both.
	FromStream, FromSQL, Witnessed int
	// What was done to Redis (redisstore.Restore*), per reservation.
	Created, Advanced, Extended, Same int
	// Conflicts are reservations the witnesses and Redis disagree on in a
	// way no forward step settles (two different endings, two users):
	// left as Redis has them, for an operator.
	Conflicts []Diff
	// Counts are the counters before and after (redisstore.Recount).
	Counts redisstore.Recounted
}

// Restore rebuilds a sale's state in one region's Redis after Redis lost
// writes (a failover to a lagging replica, a restart without AOF, a
// FLUSHALL), from the two witnesses of what the region sold: the order
// stream still in Redis and the SQL order store. Every reservation either
// knows is put back with its user, requestId, state, expiry and payment;
// then the counters are set from the reservations: reserved and each
// user's holding exactly, sold to at least the confirmed ones. So after
// it a buyer who holds a unit cannot buy another, a retry of a known
// requestId answers its reservation, confirming a live reservation works,
// and a reservation id once used stays taken (the reserve script refuses
// an id whose hash exists). It never moves a reservation back, nor lowers
// sold. It is idempotent: run it again and it finds everything "same".
//
// It does not touch the quota counters (granted_seen, released_local):
// the agent max-merges those from etcd (ApplyGrant, RaiseFloor) after it.
// Call it with the sale halted in this region (ErrNotHalted otherwise),
// under the agent's fence (a deposed agent's is quota.ErrStaleFence: it
// writes nothing), then resume selling. What no witness saw is lost: see DESIGN §4.5.
func Restore(ctx context.Context, rs *redisstore.Store, sql Store, sale string, fence int64) (RestoreResult, error) {
	region := rs.Region()
	res := RestoreResult{Sale: sale, Region: region}
	c, err := rs.Counters(ctx, sale)
	if err != nil {
		return res, fmt.Errorf("restore %s: %w", sale, err)
	}
	if !c.Halted {
		return res, fmt.Errorf("restore %s in %s: %w", sale, region, ErrNotHalted)
	}
	w := witnesses{}
	rows, err := sql.Orders(ctx, sale, region)
	if err != nil {
		return res, fmt.Errorf("restore %s: %w", sale, err)
	}
	for _, o := range rows {
		w.add(o.Resv, sqlWitness).fold(Event{
			Type: TypeReserved, Resv: o.Resv, User: o.User, Req: o.Req,
			At: o.CreatedAt.UnixMilli(), ExpiresAt: msOrZero(o), PaymentID: o.PaymentID,
		})
		if o.State.Terminal() {
			w[o.Resv].fold(Event{Type: string(o.State), Resv: o.Resv, User: o.User, Req: o.Req, At: o.UpdatedAt.UnixMilli(), PaymentID: o.PaymentID})
		}
	}
	for after := "-"; ; {
		msgs, err := rs.OrderEvents(ctx, sale, after, 1000)
		if err != nil {
			return res, fmt.Errorf("restore %s: %w", sale, err)
		}
		if len(msgs) == 0 {
			break
		}
		after = msgs[len(msgs)-1].ID
		for _, m := range msgs {
			e, err := ParseEvent(m.ID, m.Values)
			if err != nil || e.Sale != sale || e.Region != region {
				continue // the consumer records such entries as rejects
			}
			w.add(e.Resv, streamWitness).fold(e)
		}
	}
	list := make([]*witness, 0, len(w))
	for _, x := range w {
		switch {
		case x.seen&sqlWitness != 0 && x.seen&streamWitness != 0:
			res.FromSQL++
			res.FromStream++
		case x.seen&sqlWitness != 0:
			res.FromSQL++
		default:
			res.FromStream++
		}
		if x.conflict != "" {
			res.Conflicts = append(res.Conflicts, Diff{Kind: x.conflict, Resv: x.ID, SQL: x.detail})
			if x.conflict == UserMismatch {
				continue // whose unit it is cannot be told: leave Redis as it is
			}
		}
		list = append(list, x)
	}
	res.Witnessed = len(w)
	// In the order they were made, so the restored events read in order.
	sort.Slice(list, func(i, j int) bool {
		if list[i].CreatedAt != list[j].CreatedAt {
			return list[i].CreatedAt < list[j].CreatedAt
		}
		return list[i].ID < list[j].ID
	})
	rsv := make([]redisstore.Restored, len(list))
	for i, x := range list {
		rsv[i] = x.Restored
		if rsv[i].RequestID == "" {
			// A row written before order rows kept the requestId: a key no
			// buyer can send ('~' is outside the id charset) keeps the
			// reservation listed in the req hash, where every count and
			// check finds reservations.
			rsv[i].RequestID = "~" + x.ID
		}
	}
	words, err := rs.Restore(ctx, sale, fence, rsv)
	if err != nil {
		return res, err
	}
	for i, word := range words {
		switch word {
		case redisstore.RestoreCreated:
			res.Created++
		case redisstore.RestoreAdvanced:
			res.Advanced++
		case redisstore.RestoreExtended:
			res.Extended++
		case redisstore.RestoreSame:
			res.Same++
		case redisstore.RestoreReqTaken:
			res.Created++
			res.Conflicts = append(res.Conflicts, Diff{Kind: "request_id_taken", Resv: rsv[i].ID, SQL: rsv[i].RequestID})
		default:
			res.Conflicts = append(res.Conflicts, Diff{Kind: StateConflict, Resv: rsv[i].ID, SQL: redisstore.StateName(rsv[i].State)})
		}
	}
	if res.Counts, err = rs.Recount(ctx, sale, fence); err != nil {
		return res, err
	}
	return res, nil
}

const (
	sqlWitness    = 1
	streamWitness = 2
)

type witnesses map[string]*witness

func (w witnesses) add(id string, from int) *witness {
	x := w[id]
	if x == nil {
		x = &witness{Restored: redisstore.Restored{ID: id, State: quota.Active}}
		w[id] = x
	}
	x.seen |= from
	return x
}

// witness is what the witnesses together know of one reservation.
type witness struct {
	redisstore.Restored
	seen     int
	conflict string // a Diff kind, when two witnesses disagree
	detail   string
}

// fold merges one event (or one order row read as events) into x: user
// and requestId as first known, the earliest creation, the latest expiry,
// and the state moved forward only. Two different endings keep confirmed
// (a payment was taken) and are reported.
func (x *witness) fold(e Event) {
	if x.User == "" {
		x.User = e.User
	} else if e.User != "" && e.User != x.User {
		x.conflict, x.detail = UserMismatch, x.User+" vs "+e.User
	}
	if x.RequestID == "" {
		x.RequestID = e.Req
	}
	if e.Type == TypeReserved && e.At > 0 && (x.CreatedAt == 0 || e.At < x.CreatedAt) {
		x.CreatedAt = e.At
	}
	x.ExpiresAt = max(x.ExpiresAt, e.ExpiresAt)
	if x.PaymentID == "" {
		x.PaymentID = e.PaymentID
	}
	st := quota.Active
	switch e.State() {
	case Confirmed:
		st = quota.Confirmed
	case Cancelled:
		st = quota.Cancelled
	case Expired:
		st = quota.Expired
	}
	switch {
	case st == quota.Active:
		if e.Type == TypeExtended {
			x.EndedAt = max(x.EndedAt, e.At)
		}
	case x.State == quota.Active:
		x.State, x.EndedAt = st, e.At
	case x.State != st:
		if x.conflict == "" {
			x.conflict, x.detail = StateConflict, redisstore.StateName(x.State)+" vs "+redisstore.StateName(st)
		}
		if st == quota.Confirmed {
			x.State, x.EndedAt = st, e.At
		}
	}
}

func msOrZero(o Order) int64 {
	if o.ExpiresAt.IsZero() {
		return 0
	}
	return o.ExpiresAt.UnixMilli()
}
