package redisstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"flashsale/quota"
	"flashsale/quota/layout"
)

var (
	scriptRestore = mustScript("restore")
	scriptRecount = mustScript("recount")
)

// Restored is a reservation that a witness of the region's sales (its
// order stream, its SQL order store) knows, to be put back into a Redis
// that lost writes. Times are unix milliseconds.
type Restored struct {
	ID, User, RequestID string
	State               quota.ResvState
	ExpiresAt           int64
	CreatedAt, EndedAt  int64 // the reserved event's time; the ending's (or the last extension's)
	PaymentID           string
}

// What Restore did to one reservation (restore.lua says when).
const (
	RestoreCreated  = "created"
	RestoreAdvanced = "advanced"
	RestoreExtended = "extended"
	RestoreSame     = "same"
	RestoreConflict = "conflict"
	RestoreReqTaken = "req_taken"
)

// restoreChunk is how many reservations one restore script call takes:
// each costs a handful of commands, so a call holds Redis well under a
// millisecond.
const restoreChunk = 100

var stateWords = map[quota.ResvState]string{quota.Active: "active", quota.Confirmed: "confirmed", quota.Cancelled: "cancelled", quota.Expired: "expired"}

// StateName is a reservation state's word in Redis and the order stream
// (the inverse of what Reservation parses).
func StateName(s quota.ResvState) string { return stateWords[s] }

// Restore puts rs back into sale's Redis state: a missing reservation is
// written whole (hash, requestId, expiry entry, events), an active one a
// witness saw end is ended, an active one a witness saw extended is
// extended; nothing is ever moved back. It answers one Restore* word per
// reservation. The counters are left to Recount, which must follow. Run
// it while the sale is halted (no reserve may take a requestId meanwhile),
// under the agent's fence: an older one is quota.ErrStaleFence (DESIGN I5).
func (s *Store) Restore(ctx context.Context, sale string, fence int64, rs []Restored) ([]string, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for len(rs) > 0 {
		chunk := rs[:min(len(rs), restoreChunk)]
		rs = rs[len(chunk):]
		args := make([]any, 1, 1+8*len(chunk))
		args[0] = fence
		for _, r := range chunk {
			w, ok := stateWords[r.State]
			if !ok {
				return out, fmt.Errorf("%w: reservation %s in state %d", ErrStoreInput, r.ID, r.State)
			}
			for what, v := range map[string]string{"reservation id": r.ID, "user": r.User, "request id": r.RequestID} {
				if err := checkKeyPart(what, v); err != nil {
					return out, err
				}
			}
			args = append(args, r.ID, r.User, r.RequestID, w, r.ExpiresAt, r.CreatedAt, r.EndedAt, r.PaymentID)
		}
		v, err := s.run(ctx, scriptRestore, sale, args...)
		if err != nil {
			return out, fmt.Errorf("restore %d reservations of %s: %w", len(chunk), sale, err)
		}
		words, err := replyStrings(v)
		if err == nil && len(words) == 1 && words[0] == "stale_fence" {
			return out, fmt.Errorf("restore reservations of %s: %w", sale, quota.ErrStaleFence)
		}
		if err != nil || len(words) != len(chunk) {
			return out, fmt.Errorf("restore reservations of %s: unexpected reply %v", sale, v)
		}
		out = append(out, words...)
	}
	return out, nil
}

// Recounted is what Recount found and set.
type Recounted struct {
	SoldBefore, Sold         int64
	ReservedBefore, Reserved int64
	Reservations, Users      int64
}

// Recount sets sale's counters from its reservations in one script:
// reserved to the active ones and each user's holding to its active and
// confirmed ones, exactly; sold to at least the confirmed ones (a floor
// raised from etcd stays). O(reservations): once per reconcile, under the
// agent's fence (an older one is quota.ErrStaleFence).
func (s *Store) Recount(ctx context.Context, sale string, fence int64) (Recounted, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return Recounted{}, err
	}
	v, err := s.run(ctx, scriptRecount, sale, fence)
	if err != nil {
		return Recounted{}, fmt.Errorf("recount %s: %w", sale, err)
	}
	f, err := replyStrings(v)
	if err == nil && len(f) == 1 && f[0] == "stale_fence" {
		return Recounted{}, fmt.Errorf("recount %s: %w", sale, quota.ErrStaleFence)
	}
	if err != nil || len(f) != 6 {
		return Recounted{}, fmt.Errorf("recount %s: unexpected reply %v", sale, v)
	}
	n := make([]int64, 6)
	for i, x := range f {
		if n[i], err = strconv.ParseInt(x, 10, 64); err != nil {
			return Recounted{}, fmt.Errorf("recount %s: reply %v: %w", sale, f, err)
		}
	}
	return Recounted{SoldBefore: n[0], Sold: n[1], ReservedBefore: n[2], Reserved: n[3], Reservations: n[4], Users: n[5]}, nil
}

// Region is the region whose Redis the Store runs against.
func (s *Store) Region() string { return s.region }

// OrderEvents reads up to n entries of sale's order stream after the
// entry id after ("-" for the start).
func (s *Store) OrderEvents(ctx context.Context, sale, after string, n int64) ([]redis.XMessage, error) {
	from := after
	if after != "-" {
		from = "(" + after
	}
	msgs, err := s.rdb.XRangeN(ctx, layout.StreamKey(sale), from, "+", n).Result()
	if err != nil {
		return nil, fmt.Errorf("read order stream of %s: %w", sale, err)
	}
	return msgs, nil
}
