package redisstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/quota"
	"flashsale/quota/layout"
)

//go:embed scripts/*.lua
var scriptFS embed.FS

// The scripts, each lib.lua followed by its own file. Parsed once at init:
// a missing file is a build mistake, so it panics at start.
var (
	scriptReserve      = mustScript("reserve")
	scriptReserveBatch = mustScript("reserve_batch")
	scriptConfirm      = mustScript("confirm")
	scriptCancel       = mustScript("cancel")
	scriptExpire       = mustScript("expire")
	scriptExtend       = mustScript("extend")
	scriptApplyGrant   = mustScript("apply_grant")
	scriptRelease      = mustScript("release")
	scriptRaiseFloor   = mustScript("raise_floor")
	scriptSetHalted    = mustScript("set_halted")
	scriptSetView      = mustScript("set_view")
	scriptResume       = mustScript("resume")

	allScripts = []*redis.Script{
		scriptReserve, scriptReserveBatch, scriptConfirm, scriptCancel, scriptExpire,
		scriptExtend, scriptApplyGrant, scriptRelease, scriptRaiseFloor, scriptSetHalted, scriptSetView, scriptResume,
		scriptRestore, scriptRecount,
	}
)

func mustScript(name string) *redis.Script {
	lib, err := scriptFS.ReadFile("scripts/lib.lua")
	if err != nil {
		panic(err)
	}
	body, err := scriptFS.ReadFile("scripts/" + name + ".lua")
	if err != nil {
		panic(err)
	}
	// UNSAFE_NO_FENCE is a test-only switch (unsafe.go).
	return redis.NewScript(fmt.Sprintf("local UNSAFE_NO_FENCE = %t\n", unsafeNoFence) + string(lib) + "\n" + string(body))
}

// MaxKeyPartLen bounds sale, user, request and reservation ids so that one
// request cannot make Redis keys or stream entries arbitrarily large.
const MaxKeyPartLen = 128

// ErrStoreInput is wrapped by every error about an argument the caller
// should not have sent; nothing reached Redis.
var ErrStoreInput = errors.New("bad input")

// Store runs the sale scripts against one region's Redis. It is safe for
// concurrent use; all state lives in Redis.
type Store struct {
	rdb    redis.UniversalClient
	region string
	dur    Durability
}

// NewStore returns a Store for region's Redis, in DurableFsync mode
// (WithDurability changes it). The region name is written into every
// order event.
func NewStore(rdb redis.UniversalClient, region string) *Store {
	return &Store{rdb: rdb, region: region, dur: Durability{}.withDefaults()}
}

// scriptKeys are the fixed keys of a sale, in the order lib.lua expects.
func scriptKeys(sale string) []string {
	keys := make([]string, 0, 7)
	for _, k := range []string{"ledger", "releases", "users", "req", "expiry", "orders", "view"} {
		keys = append(keys, layout.SaleKey(sale, k))
	}
	return keys
}

func checkKeyPart(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrStoreInput, what)
	}
	if len(v) > MaxKeyPartLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrStoreInput, what, MaxKeyPartLen)
	}
	// Braces would change the hash tag and move keys to another slot.
	if strings.ContainsAny(v, "{}") {
		return fmt.Errorf("%w: %s %q contains a brace", ErrStoreInput, what, v)
	}
	return nil
}

// run runs a script for sale with the sale and region as ARGV 1 and 2,
// durably as the Store's mode says (runScript).
func (s *Store) run(ctx context.Context, sc *redis.Script, sale string, args ...any) (any, error) {
	all := make([]any, 0, len(args)+2)
	all = append(all, sale, s.region)
	all = append(all, args...)
	return s.runScript(ctx, sc, scriptKeys(sale), all)
}

// Load loads every script into Redis (SCRIPT LOAD), so the hot path
// never pays for sending a script body. Readiness uses it.
func (s *Store) Load(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("load scripts: %w", err)
		}
	}
	return nil
}

// ScriptsLoaded reports whether Redis holds every script (it forgets them
// on restart; Run still works then, by sending the body once).
func (s *Store) ScriptsLoaded(ctx context.Context) (bool, error) {
	hashes := make([]string, len(allScripts))
	for i, sc := range allScripts {
		hashes[i] = sc.Hash()
	}
	ok, err := s.rdb.ScriptExists(ctx, hashes...).Result()
	if err != nil {
		return false, fmt.Errorf("script exists: %w", err)
	}
	for _, b := range ok {
		if !b {
			return false, nil
		}
	}
	return len(ok) == len(hashes), nil
}

// ReserveRequest is one buyer's attempt. RequestID makes retries safe: the
// same id always answers with the same reservation.
//
// ID is the id a new reservation gets; empty, Reserve makes one
// (NewReservationID). A retry answers the first reservation, whatever ID
// it carries. An ID already in use is refused (quota.ErrResvExists), never
// overwritten.
type ReserveRequest struct {
	User, RequestID string
	ID              string
	Now             time.Time
	TTL             time.Duration
	PerUserLimit    int64
	// Epoch is the seller epoch the seller last read with its counters
	// (Counters.Epoch); the script refuses another (quota.StaleEpoch).
	Epoch int64
}

func (r ReserveRequest) check() error {
	if err := checkKeyPart("user", r.User); err != nil {
		return err
	}
	if err := checkKeyPart("request id", r.RequestID); err != nil {
		return err
	}
	if r.ID != "" {
		if err := checkKeyPart("reservation id", r.ID); err != nil {
			return err
		}
	}
	if r.TTL < time.Millisecond {
		return fmt.Errorf("%w: reservation TTL %v is under 1ms", ErrStoreInput, r.TTL)
	}
	if r.PerUserLimit < 1 {
		return fmt.Errorf("%w: per-user limit %d is under 1", ErrStoreInput, r.PerUserLimit)
	}
	if r.Now.UnixMilli() <= 0 {
		return fmt.Errorf("%w: time %v is not after 1970", ErrStoreInput, r.Now)
	}
	return nil
}

// args are the request's seven script arguments, with a new reservation id
// when the request names none.
func (r ReserveRequest) args() []any {
	id := r.ID
	if id == "" {
		id = NewReservationID(r.Now)
	}
	return []any{r.User, r.RequestID, id, r.Now.UnixMilli(), r.TTL.Milliseconds(), r.PerUserLimit, r.Epoch}
}

// ReserveResult is the answer of Reserve. Reservation is set for Reserved
// and Duplicate; its ExpiresAt is unix milliseconds.
type ReserveResult struct {
	Outcome     quota.Outcome
	Reservation quota.Reservation
}

// Reserve reserves one unit of sale for r.User, as quota.Ledger.Reserve,
// under r.ID or a new reservation id.
func (s *Store) Reserve(ctx context.Context, sale string, r ReserveRequest) (ReserveResult, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return ReserveResult{}, err
	}
	if err := r.check(); err != nil {
		return ReserveResult{}, err
	}
	v, err := s.run(ctx, scriptReserve, sale, r.args()...)
	if err != nil {
		return ReserveResult{}, fmt.Errorf("reserve %s: %w", sale, err)
	}
	res, err := parseReserveReply(v)
	if err != nil {
		return ReserveResult{}, fmt.Errorf("reserve %s: %w", sale, err)
	}
	return res, nil
}

// reserveBatch runs rs in one script call, answering as len(rs) sequential
// Reserve calls would: out[i] and errs[i] are request i's answer, errs[i]
// only for an id already in use (quota.ErrResvExists), which refuses that
// request alone. err is for the whole call. The requests must already be
// checked; those without an ID get a new one.
func (s *Store) reserveBatch(ctx context.Context, sale string, rs []ReserveRequest) (out []ReserveResult, errs []error, err error) {
	if len(rs) == 0 || len(rs) > MaxBatch {
		return nil, nil, fmt.Errorf("reserve batch of %d on %s: want 1..%d requests", len(rs), sale, MaxBatch)
	}
	args := make([]any, 0, 7*len(rs))
	for _, r := range rs {
		args = append(args, r.args()...)
	}
	v, err := s.run(ctx, scriptReserveBatch, sale, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("reserve batch of %d on %s: %w", len(rs), sale, err)
	}
	list, ok := v.([]any)
	if !ok || len(list) != len(rs) {
		return nil, nil, fmt.Errorf("reserve batch on %s: want %d answers, got %v", sale, len(rs), v)
	}
	out, errs = make([]ReserveResult, len(rs)), make([]error, len(rs))
	for i, e := range list {
		out[i], err = parseReserveReply(e)
		switch {
		case errors.Is(err, quota.ErrResvExists):
			errs[i] = fmt.Errorf("reserve %s: %w", sale, err)
		case err != nil:
			return nil, nil, fmt.Errorf("reserve batch on %s: %w", sale, err)
		}
	}
	return out, errs, nil
}

func parseReserveReply(v any) (ReserveResult, error) {
	f, err := replyStrings(v)
	if err != nil || len(f) == 0 {
		return ReserveResult{}, fmt.Errorf("unexpected reply %v", v)
	}
	var res ReserveResult
	switch f[0] {
	case "reserved":
		res.Outcome = quota.Reserved
	case "duplicate":
		res.Outcome = quota.Duplicate
	case "user_limit":
		return ReserveResult{Outcome: quota.UserLimit}, nil
	case "sold_out":
		return ReserveResult{Outcome: quota.SoldOut}, nil
	case "halted":
		return ReserveResult{Outcome: quota.Halted}, nil
	case "stale_epoch":
		return ReserveResult{Outcome: quota.StaleEpoch}, nil
	case "id_taken":
		if len(f) != 2 {
			return ReserveResult{}, fmt.Errorf("unexpected reply %v", v)
		}
		return ReserveResult{}, fmt.Errorf("reservation %s: %w", f[1], quota.ErrResvExists)
	default:
		return ReserveResult{}, fmt.Errorf("unexpected outcome %q", f[0])
	}
	if len(f) != 6 {
		return ReserveResult{}, fmt.Errorf("unexpected reply %v", v)
	}
	exp, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return ReserveResult{}, fmt.Errorf("expiresAt %q: %w", f[4], err)
	}
	st, err := parseResvState(f[5])
	if err != nil {
		return ReserveResult{}, err
	}
	res.Reservation = quota.Reservation{ID: f[1], User: f[2], RequestID: f[3], ExpiresAt: exp, State: st}
	return res, nil
}

func parseResvState(s string) (quota.ResvState, error) {
	switch s {
	case "active":
		return quota.Active, nil
	case "confirmed":
		return quota.Confirmed, nil
	case "cancelled":
		return quota.Cancelled, nil
	case "expired":
		return quota.Expired, nil
	}
	return 0, fmt.Errorf("unknown reservation state %q", s)
}

// replyStrings reads a script's array reply of strings (integers are accepted too).
func replyStrings(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("reply %v is not an array", v)
	}
	out := make([]string, len(list))
	for i, e := range list {
		switch e := e.(type) {
		case string:
			out[i] = e
		case int64:
			out[i] = strconv.FormatInt(e, 10)
		default:
			return nil, fmt.Errorf("reply element %v (%T) is not a string", e, e)
		}
	}
	return out, nil
}

// scriptStatus maps a script's status word to the ledger's errors.
func scriptStatus(s string) error {
	switch s {
	case "ok":
		return nil
	case "stale_fence":
		return quota.ErrStaleFence
	case "not_active":
		return quota.ErrNotActive
	case "no_such_reservation":
		return quota.ErrNoSuchResv
	case "negative":
		return quota.ErrNegative
	case "halted":
		return quota.ErrHalted
	case "stale_epoch":
		return quota.ErrStaleEpoch
	case "new_primary":
		return quota.ErrNewPrimary
	}
	return fmt.Errorf("unexpected script status %q", s)
}

// Confirm turns an active reservation into a sale, as quota.Ledger.Confirm:
// a stopped region (Counters.Stopped) answers quota.ErrHalted whatever the
// reservation; then a repeat succeeds; cancelled or expired answers
// quota.ErrNotActive, unknown quota.ErrNoSuchResv. now stamps the order
// event.
func (s *Store) Confirm(ctx context.Context, sale, id string, now time.Time) error {
	return s.finish(ctx, scriptConfirm, "confirm", sale, id, now, "")
}

// ConfirmPaid is Confirm for a reservation paid by paymentID, which is
// recorded on the reservation and its confirmed event (so the order row
// names the payment).
func (s *Store) ConfirmPaid(ctx context.Context, sale, id string, now time.Time, paymentID string) error {
	return s.finish(ctx, scriptConfirm, "confirm", sale, id, now, paymentID)
}

// Cancel returns an active reservation's unit to stock, as
// quota.Ledger.Cancel (quota.ErrHalted while the region is stopped).
func (s *Store) Cancel(ctx context.Context, sale, id string, now time.Time) error {
	return s.finish(ctx, scriptCancel, "cancel", sale, id, now, "")
}

func (s *Store) finish(ctx context.Context, sc *redis.Script, op, sale, id string, now time.Time, payment string) error {
	if err := checkKeyPart("sale", sale); err != nil {
		return err
	}
	if err := checkKeyPart("reservation id", id); err != nil {
		return err
	}
	v, err := s.run(ctx, sc, sale, id, now.UnixMilli(), payment)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, sale, id, err)
	}
	w, _ := v.(string)
	if err := scriptStatus(w); err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, sale, id, err)
	}
	return nil
}

// Extend moves an active reservation's expiry to until, but never beyond
// max and never earlier than it is; it returns the expiry in force. Used
// while payment is down, so buyers are not punished for our outage.
func (s *Store) Extend(ctx context.Context, sale, id string, until, max time.Time) (time.Time, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return time.Time{}, err
	}
	if err := checkKeyPart("reservation id", id); err != nil {
		return time.Time{}, err
	}
	v, err := s.run(ctx, scriptExtend, sale, id, until.UnixMilli(), max.UnixMilli())
	if err != nil {
		return time.Time{}, fmt.Errorf("extend %s/%s: %w", sale, id, err)
	}
	f, err := replyStrings(v)
	if err != nil || len(f) != 2 {
		return time.Time{}, fmt.Errorf("extend %s/%s: unexpected reply %v", sale, id, v)
	}
	ms, perr := strconv.ParseInt(f[1], 10, 64)
	if perr != nil {
		return time.Time{}, fmt.Errorf("extend %s/%s: expiresAt %q: %w", sale, id, f[1], perr)
	}
	if err := scriptStatus(f[0]); err != nil {
		return time.UnixMilli(ms), fmt.Errorf("extend %s/%s: %w", sale, id, err)
	}
	return time.UnixMilli(ms), nil
}

// Expire ends at most limit active reservations due by now, in
// (expiresAt, id) order, returning their units to stock; it returns their
// ids. Bounded so one call never blocks Redis for long.
func (s *Store) Expire(ctx context.Context, sale string, now time.Time, limit int) ([]string, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("%w: expire limit %d is negative", ErrStoreInput, limit)
	}
	v, err := s.run(ctx, scriptExpire, sale, now.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("expire %s: %w", sale, err)
	}
	ids, err := replyStrings(v)
	if err != nil {
		return nil, fmt.Errorf("expire %s: %w", sale, err)
	}
	return ids, nil
}

// Reservation reads one reservation; quota.ErrNoSuchResv if there is none.
func (s *Store) Reservation(ctx context.Context, sale, id string) (quota.Reservation, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return quota.Reservation{}, err
	}
	if err := checkKeyPart("reservation id", id); err != nil {
		return quota.Reservation{}, err
	}
	v, err := s.rdb.HMGet(ctx, layout.ResvKey(sale, id), "user", "req", "expiresAt", "state").Result()
	if err != nil {
		return quota.Reservation{}, fmt.Errorf("reservation %s/%s: %w", sale, id, err)
	}
	f := make([]string, len(v))
	for i, e := range v {
		f[i], _ = e.(string)
	}
	if f[3] == "" {
		return quota.Reservation{}, fmt.Errorf("reservation %s/%s: %w", sale, id, quota.ErrNoSuchResv)
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return quota.Reservation{}, fmt.Errorf("reservation %s/%s: expiresAt %q: %w", sale, id, f[2], err)
	}
	st, err := parseResvState(f[3])
	if err != nil {
		return quota.Reservation{}, fmt.Errorf("reservation %s/%s: %w", sale, id, err)
	}
	return quota.Reservation{ID: id, User: f[0], RequestID: f[1], ExpiresAt: exp, State: st}, nil
}

// ApplyGrant max-merges granted (the cumulative granted_r from etcd) under
// the agent's fence, as quota.Ledger.ApplyGrant, and returns granted_seen.
// An older fence gets quota.ErrStaleFence and changes nothing.
func (s *Store) ApplyGrant(ctx context.Context, sale string, fence, granted int64) (int64, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return 0, err
	}
	v, err := s.run(ctx, scriptApplyGrant, sale, fence, granted)
	if err != nil {
		return 0, fmt.Errorf("apply grant %d to %s: %w", granted, sale, err)
	}
	return grantReply("apply grant to", sale, fence, v)
}

// grantReply reads {status, granted_seen}, the answer of apply_grant.lua
// and resume.lua.
func grantReply(op, sale string, fence int64, v any) (int64, error) {
	f, err := replyStrings(v)
	if err != nil || len(f) != 2 {
		return 0, fmt.Errorf("%s %s: unexpected reply %v", op, sale, v)
	}
	seen, perr := strconv.ParseInt(f[1], 10, 64)
	if perr != nil {
		return 0, fmt.Errorf("%s %s: granted_seen %q: %w", op, sale, f[1], perr)
	}
	if err := scriptStatus(f[0]); err != nil {
		return seen, fmt.Errorf("%s %s (fence %d): %w", op, sale, fence, err)
	}
	return seen, nil
}

// Release gives up to k unused units under release id, leaving at least
// keep of them, as quota.Ledger.Release: it returns the units m released
// by that id (a repeat returns the same m and changes nothing) and the
// cumulative released_local the agent acknowledges to the coordinator. A new
// release needs the seller epoch and a region not stopped
// (quota.ErrStaleEpoch, quota.ErrHalted).
func (s *Store) Release(ctx context.Context, sale string, fence, epoch int64, id string, k, keep int64) (m, releasedLocal int64, err error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return 0, 0, err
	}
	if err := checkKeyPart("release id", id); err != nil {
		return 0, 0, err
	}
	v, err := s.run(ctx, scriptRelease, sale, fence, epoch, id, k, keep)
	if err != nil {
		return 0, 0, fmt.Errorf("release %s of %s: %w", id, sale, err)
	}
	f, err := replyStrings(v)
	if err != nil || len(f) != 3 {
		return 0, 0, fmt.Errorf("release %s of %s: unexpected reply %v", id, sale, v)
	}
	m, err1 := strconv.ParseInt(f[1], 10, 64)
	releasedLocal, err2 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("release %s of %s: reply %v: %w", id, sale, f, err)
	}
	if err := scriptStatus(f[0]); err != nil {
		return m, releasedLocal, fmt.Errorf("release %s of %s (fence %d, k %d): %w", id, sale, fence, k, err)
	}
	return m, releasedLocal, nil
}

// RaiseFloor raises released_local and sold to at least the given values
// (reconciling after lost writes), as quota.Ledger.RaiseFloor.
func (s *Store) RaiseFloor(ctx context.Context, sale string, fence, releasedLocal, sold int64) error {
	if err := checkKeyPart("sale", sale); err != nil {
		return err
	}
	return s.fenced(ctx, scriptRaiseFloor, "raise floor of", sale, fence, releasedLocal, sold)
}

// SetHalted stops or resumes selling, as quota.Ledger.SetHalted.
func (s *Store) SetHalted(ctx context.Context, sale string, fence int64, halted bool) error {
	if err := checkKeyPart("sale", sale); err != nil {
		return err
	}
	h := 0
	if halted {
		h = 1
	}
	return s.fenced(ctx, scriptSetHalted, "set halted on", sale, fence, h)
}

// Resume ends a reconciliation, as quota.Ledger.Resume: the region sells
// again under seller epoch epoch, with granted max-merged, if Redis is still
// primary (the master_replid Counters read when the reconciliation
// started); another answers quota.ErrNewPrimary. It returns granted_seen.
func (s *Store) Resume(ctx context.Context, sale string, fence, epoch int64, primary string, granted int64) (int64, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return 0, err
	}
	v, err := s.run(ctx, scriptResume, sale, fence, epoch, primary, granted)
	if err != nil {
		return 0, fmt.Errorf("resume %s: %w", sale, err)
	}
	return grantReply("resume", sale, fence, v)
}

func (s *Store) fenced(ctx context.Context, sc *redis.Script, op, sale string, fence int64, args ...any) error {
	v, err := s.run(ctx, sc, sale, append([]any{fence}, args...)...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, sale, err)
	}
	w, _ := v.(string)
	if err := scriptStatus(w); err != nil {
		return fmt.Errorf("%s %s (fence %d): %w", op, sale, fence, err)
	}
	return nil
}

// Counters is a snapshot of a sale's ledger hash. (A ledger written before
// reservation ids were ULIDs also holds a "seq" field; nothing reads it.)
type Counters struct {
	Fence, GrantedSeen, ReleasedLocal, Sold, Reserved int64
	Halted                                            bool
	// Epoch is the seller epoch sellers pass to reserve; EpochPrimary the
	// primary it was set on (quota.Ledger). Primary is the server answering
	// now (its master_replid), read by Counters only, not by Stocks.
	Epoch                 int64
	EpochPrimary, Primary string
}

// Stopped is quota.Ledger.Stopped: halted, or a primary not reconciled.
// Only meaningful when Primary was read (Counters).
func (c Counters) Stopped() bool {
	return c.Halted || (c.Epoch > 0 && c.EpochPrimary != c.Primary)
}

// Ceiling is the most units the region may have sold plus reserved.
func (c Counters) Ceiling() int64 { return c.GrantedSeen - c.ReleasedLocal }

// Available is what can still be reserved; never negative.
func (c Counters) Available() int64 { return max(0, c.Ceiling()-c.Sold-c.Reserved) }

// Counters reads the sale's ledger hash in one command (a consistent
// snapshot: scripts are atomic), and the primary answering, in the same
// round trip.
func (s *Store) Counters(ctx context.Context, sale string) (Counters, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return Counters{}, err
	}
	pipe := s.rdb.Pipeline()
	hm := pipe.HMGet(ctx, layout.SaleKey(sale, "ledger"), ledgerFields...)
	info := pipe.Info(ctx, "replication")
	if _, err := pipe.Exec(ctx); err != nil {
		return Counters{}, fmt.Errorf("counters of %s: %w", sale, err)
	}
	c, err := parseCounters(sale, hm.Val())
	if err != nil {
		return c, err
	}
	c.Primary = replID(info.Val())
	return c, nil
}

// replID is master_replid from INFO replication, as lib.lua's primary().
func replID(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_replid:"); ok {
			return v
		}
	}
	return ""
}

var ledgerFields = []string{"fence", "granted_seen", "released_local", "sold", "reserved", "halted", "epoch", "epoch_primary"}

func parseCounters(sale string, v []any) (Counters, error) {
	if len(v) != len(ledgerFields) {
		return Counters{}, fmt.Errorf("counters of %s: %d fields, want %d", sale, len(v), len(ledgerFields))
	}
	n, err := parseInts(v[:7])
	if err != nil {
		return Counters{}, fmt.Errorf("counters of %s: %w", sale, err)
	}
	ep, _ := v[7].(string)
	return Counters{Fence: n[0], GrantedSeen: n[1], ReleasedLocal: n[2], Sold: n[3], Reserved: n[4], Halted: n[5] == 1,
		Epoch: n[6], EpochPrimary: ep}, nil
}

// SaleView is what the region agent last learned of the rest of the sale
// (the other regions' reports in etcd), copied into the region's Redis so
// that sellers can tell "this region is dry" from "the sale is sold out"
// without reading etcd. It is advisory: no script decides a reservation
// from it. Sold only grows, so a stale view can only understate what the
// others sold: a seller that finds the sale sold out from it is right.
type SaleView struct {
	Total          int64 // the sale's total
	OthersSold     int64 // sold, summed over the other regions
	OthersReserved int64 // reserved (unpaid), summed over the other regions
	At             int64 // unix ms when the agent wrote it; 0: never written
}

// SetSaleView writes the view under the agent's fence: an older fence gets
// quota.ErrStaleFence and changes nothing.
func (s *Store) SetSaleView(ctx context.Context, sale string, fence int64, v SaleView) error {
	if err := checkKeyPart("sale", sale); err != nil {
		return err
	}
	return s.fenced(ctx, scriptSetView, "set view of", sale, fence, v.Total, v.OthersSold, v.OthersReserved, v.At)
}

// View reads the sale's view; a zero View (At 0) when the agent never wrote
// one (a seller run from a config file is its own whole sale).
func (s *Store) View(ctx context.Context, sale string) (SaleView, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return SaleView{}, err
	}
	v, err := s.rdb.HMGet(ctx, layout.SaleKey(sale, "view"), viewFields...).Result()
	if err != nil {
		return SaleView{}, fmt.Errorf("view of %s: %w", sale, err)
	}
	return parseView(sale, v)
}

var viewFields = []string{"total", "others_sold", "others_reserved", "at"}

func parseView(sale string, v []any) (SaleView, error) {
	n, err := parseInts(v)
	if err != nil {
		return SaleView{}, fmt.Errorf("view of %s: %w", sale, err)
	}
	return SaleView{Total: n[0], OthersSold: n[1], OthersReserved: n[2], At: n[3]}, nil
}

// Stock is one sale's counters and view, read together.
type Stock struct {
	Counters Counters
	View     SaleView
	// ReadAt is the Redis server's clock (TIME, microseconds) when the
	// pipeline ran: one clock for every seller of the region, so reads
	// passed around by gossip are ordered by it.
	ReadAt int64
	Err    error // this sale's read failed; Counters and View are zero
}

// Stocks reads the counters and the view of every sale given in one
// pipeline: one round trip however many sales, so the seller's refresh
// costs Redis two HMGETs per sale per pass and no more.
func (s *Store) Stocks(ctx context.Context, sales []string) []Stock {
	out := make([]Stock, len(sales))
	ledgers := make([]*redis.SliceCmd, len(sales))
	views := make([]*redis.SliceCmd, len(sales))
	pipe := s.rdb.Pipeline()
	clock := pipe.Time(ctx)
	for i, sale := range sales {
		if out[i].Err = checkKeyPart("sale", sale); out[i].Err != nil {
			continue
		}
		ledgers[i] = pipe.HMGet(ctx, layout.SaleKey(sale, "ledger"), ledgerFields...)
		views[i] = pipe.HMGet(ctx, layout.SaleKey(sale, "view"), viewFields...)
	}
	// Exec's error is the first command's; each command keeps its own,
	// except when the pipeline never reached Redis (a refused dial): then
	// the commands may carry no error and no answer, so Exec's error
	// stands for all of them.
	_, execErr := pipe.Exec(ctx)
	readAt := clock.Val().UnixMicro()
	for i, sale := range sales {
		if out[i].Err != nil {
			continue
		}
		out[i].ReadAt = readAt
		c, err1 := ledgers[i].Result()
		v, err2 := views[i].Result()
		if err1 == nil && err2 == nil && (len(c) != len(ledgerFields) || len(v) != len(viewFields)) {
			err1 = fmt.Errorf("no answer (pipeline: %v)", execErr)
		}
		if err := errors.Join(err1, err2); err != nil {
			out[i].Err = fmt.Errorf("stock of %s: %w", sale, err)
			continue
		}
		if out[i].Counters, err1 = parseCounters(sale, c); err1 != nil {
			out[i].Err = err1
			continue
		}
		out[i].View, out[i].Err = parseView(sale, v)
	}
	return out
}

// parseInts parses an HMGET answer; a missing field is 0.
func parseInts(v []any) ([]int64, error) {
	n := make([]int64, len(v))
	for i, e := range v {
		str, _ := e.(string)
		if str == "" {
			continue
		}
		var err error
		if n[i], err = strconv.ParseInt(str, 10, 64); err != nil {
			return nil, fmt.Errorf("field %d %q: %w", i, str, err)
		}
	}
	return n, nil
}

// RequestReservation reads the reservation a buy with requestID made;
// quota.ErrNoSuchResv if it made none (yet).
func (s *Store) RequestReservation(ctx context.Context, sale, requestID string) (quota.Reservation, error) {
	if err := checkKeyPart("sale", sale); err != nil {
		return quota.Reservation{}, err
	}
	if err := checkKeyPart("request id", requestID); err != nil {
		return quota.Reservation{}, err
	}
	id, err := s.rdb.HGet(ctx, layout.SaleKey(sale, "req"), requestID).Result()
	if errors.Is(err, redis.Nil) {
		return quota.Reservation{}, fmt.Errorf("request %s/%s: %w", sale, requestID, quota.ErrNoSuchResv)
	}
	if err != nil {
		return quota.Reservation{}, fmt.Errorf("request %s/%s: %w", sale, requestID, err)
	}
	return s.Reservation(ctx, sale, id)
}

// ExtensionCap returns the latest expiry payment outages may extend
// reservation id to, setting it to proposed on the first call. The
// reservation hash has no creation time, so the cap is derived from the
// first extension and kept ({sale:ID}:extcap): deriving it again from an
// extended expiresAt would let every outage push the cap further.
func (s *Store) ExtensionCap(ctx context.Context, sale, id string, proposed time.Time) (time.Time, error) {
	key := layout.SaleKey(sale, "extcap")
	pipe := s.rdb.TxPipeline()
	pipe.HSetNX(ctx, key, id, proposed.UnixMilli())
	got := pipe.HGet(ctx, key, id)
	if _, err := pipe.Exec(ctx); err != nil {
		return time.Time{}, fmt.Errorf("extension cap of %s/%s: %w", sale, id, err)
	}
	ms, err := strconv.ParseInt(got.Val(), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("extension cap of %s/%s: %q: %w", sale, id, got.Val(), err)
	}
	return time.UnixMilli(ms), nil
}

// FlushDemand adds the buy attempts d counted since its last flush to the
// sales' attempts counters (see Demand.Flush).
func (s *Store) FlushDemand(ctx context.Context, d *Demand) error { return d.Flush(ctx, s.rdb) }

// SubscribeGrants subscribes to layout.GrantsChannel.
func (s *Store) SubscribeGrants(ctx context.Context) *redis.PubSub {
	return s.rdb.Subscribe(ctx, layout.GrantsChannel)
}
