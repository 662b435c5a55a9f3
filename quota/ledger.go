package quota

import (
	"errors"
	"sort"
	"strconv"
)

// Errors the ledger (and the Redis scripts that mirror it) answer with.
var (
	ErrStaleFence  = errors.New("stale fence")
	ErrNotActive   = errors.New("reservation not active")
	ErrNoSuchResv  = errors.New("no such reservation")
	ErrNegative    = errors.New("negative amount")
	ErrOverTotal   = errors.New("would exceed the sale total")
	ErrUnknownRgn  = errors.New("unknown region")
	ErrNotPending  = errors.New("no such pending release")
	ErrReleaseBusy = errors.New("region already has a pending release")
	// ErrResvExists refuses a new reservation under an id already in use:
	// a reservation is never overwritten. Ids come from the caller (ULIDs in
	// the seller), so this answers a generator bug, not a buyer.
	ErrResvExists = errors.New("reservation id already exists")
	// ErrStaleEpoch refuses a quota release under another seller epoch than
	// the primary's (DESIGN §4.5): the caller's picture is of another primary.
	ErrStaleEpoch = errors.New("stale seller epoch")
	// ErrHalted refuses a quota release, a confirm or a cancel while the
	// region is stopped (Stopped): its counters and reservations may have
	// lost writes that the agent's reconciliation will bring back, so
	// neither its available units nor a reservation's state are known.
	ErrHalted = errors.New("region halted")
	// ErrNewPrimary refuses to resume selling on another primary than the
	// one the agent reconciled: the reconciliation must start again.
	ErrNewPrimary = errors.New("redis primary changed during the reconciliation")
)

// Outcome is the answer of Reserve.
type Outcome int

const (
	Reserved   Outcome = iota // a new reservation was made
	Duplicate                 // the requestId was seen: the same reservation is returned, nothing changed
	UserLimit                 // the user already holds the per-user limit
	SoldOut                   // available is zero in this region
	Halted                    // the region stopped selling (reconciling after lost writes, or a new primary)
	StaleEpoch                // the seller's epoch is not the primary's: refresh it and retry
)

func (o Outcome) String() string {
	switch o {
	case Reserved:
		return "reserved"
	case Duplicate:
		return "duplicate"
	case UserLimit:
		return "user_limit"
	case SoldOut:
		return "sold_out"
	case Halted:
		return "halted"
	case StaleEpoch:
		return "stale_epoch"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// ResvState is the life of a reservation: it ends as exactly one of
// confirmed, cancelled or expired (DESIGN I4).
type ResvState int

const (
	Active ResvState = iota
	Confirmed
	Cancelled
	Expired
)

// Reservation is one reserved unit.
type Reservation struct {
	ID        string
	User      string
	RequestID string
	ExpiresAt int64 // unix milliseconds
	State     ResvState
}

// Ledger is the pure model of one sale's state in one region's Redis, exactly
// what regional/redisstore/scripts/*.lua do. The Redis scripts and this model must
// agree step for step: regional's tests replay the same sequences on both.
//
// Ceiling = GrantedSeen - ReleasedLocal; Available = Ceiling - Sold - Reserved.
type Ledger struct {
	Fence         int64 // highest agent fence seen; older fences are refused
	GrantedSeen   int64 // max-merge of granted_r from etcd
	ReleasedLocal int64 // cumulative units this region gave up
	Sold          int64 // confirmed reservations
	Reserved      int64 // active reservations
	Halted        bool  // selling stopped until reconciled

	// Epoch is the seller epoch (DESIGN §4.5): a fencing number only the
	// agent moves, after reconciling, recorded in etcd first. Sellers
	// learn it with their counters and pass it to every reserve; another
	// value is refused. EpochPrimary is the primary the agent reconciled
	// when it set the epoch (in Redis, its master_replid).
	Epoch        int64
	EpochPrimary string
	// Primary is the server holding this data now, not data: a failover or
	// a restart gives a new one (Redis: INFO replication's master_replid,
	// which a promoted replica changes). While it is not EpochPrimary the
	// region is halted: a new primary sells nothing until reconciled.
	Primary string

	// View is the agent's copy of the rest of the sale (set_view.lua):
	// advisory, no reservation is decided from it.
	View SaleView

	// Bugs are negative controls for the protocol simulation, never set
	// elsewhere: each breaks one check the Lua scripts make.
	Bugs LedgerBugs

	Releases map[string]int64 // release id -> units released by it
	Resv     map[string]*Reservation
	ByReq    map[string]string // requestId -> reservation id
	Users    map[string]int64  // user -> active + confirmed reservations
}

// LedgerBugs switch off checks of the ledger, so that the simulation can
// show its checker catches each (simulations/protosim's negative controls).
type LedgerBugs struct {
	ReserveIgnoresHalted bool // reserve sells while halted or on an unreconciled primary
	GrantSkipsFence      bool // apply_grant accepts an older agent's fence
	ConfirmExpired       bool // confirm turns an expired reservation into a sale
	ReleaseAnswersBefore bool // release answers the released_local it found, not the one it made
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{
		Releases: map[string]int64{},
		Resv:     map[string]*Reservation{},
		ByReq:    map[string]string{},
		Users:    map[string]int64{},
	}
}

// Ceiling is the most units this region may have sold plus reserved.
func (l *Ledger) Ceiling() int64 { return l.GrantedSeen - l.ReleasedLocal }

// Available is what can still be reserved; never negative.
func (l *Ledger) Available() int64 { return max(0, l.Ceiling()-l.Sold-l.Reserved) }

// Stopped reports whether the region may not sell: halted by its agent, or
// a primary the agent has not reconciled yet (once it ever set an epoch).
func (l *Ledger) Stopped() bool {
	return l.Halted || (l.Epoch > 0 && l.EpochPrimary != l.Primary)
}

func (l *Ledger) fence(f int64) error {
	if f < l.Fence {
		return ErrStaleFence
	}
	l.Fence = f
	return nil
}

// ApplyGrant max-merges granted (the cumulative granted_r from etcd) into
// GrantedSeen, so a stale or repeated grant never moves the ceiling wrongly.
// It returns the GrantedSeen after the merge.
func (l *Ledger) ApplyGrant(fence, granted int64) (int64, error) {
	if err := l.fence(fence); err != nil && !l.Bugs.GrantSkipsFence {
		return l.GrantedSeen, err
	}
	l.GrantedSeen = max(l.GrantedSeen, granted)
	return l.GrantedSeen, nil
}

// Release gives up to k unused units but leaves keep of them: m = min(k,
// Available - keep), never negative. keep is the coordinator's floor for
// the region, made from figures up to a report old: the region keeps it
// whatever it sold since. A repeat of the same id returns the recorded m and
// changes nothing. A new release runs only under the primary's epoch and
// while the region is not stopped (ErrStaleEpoch, ErrHalted): counters that
// may have lost writes cannot say what is unused. It returns m and the
// cumulative ReleasedLocal, which the agent acknowledges to the coordinator.
func (l *Ledger) Release(fence, epoch int64, id string, k, keep int64) (m, releasedLocal int64, err error) {
	if k < 0 || keep < 0 {
		return 0, l.ReleasedLocal, ErrNegative
	}
	if err := l.fence(fence); err != nil {
		return 0, l.ReleasedLocal, err
	}
	if got, ok := l.Releases[id]; ok {
		return got, l.ReleasedLocal, nil
	}
	if l.Stopped() {
		return 0, l.ReleasedLocal, ErrHalted
	}
	if epoch != l.Epoch {
		return 0, l.ReleasedLocal, ErrStaleEpoch
	}
	m = max(0, min(k, l.Available()-keep))
	l.ReleasedLocal += m
	l.Releases[id] = m
	if l.Bugs.ReleaseAnswersBefore {
		return m, l.ReleasedLocal - m, nil
	}
	return m, l.ReleasedLocal, nil
}

// RaiseFloor reconciles a ledger that lost writes: ReleasedLocal and Sold are
// raised to at least what etcd or the order store know, never lowered.
func (l *Ledger) RaiseFloor(fence, releasedLocal, sold int64) error {
	if err := l.fence(fence); err != nil {
		return err
	}
	l.ReleasedLocal = max(l.ReleasedLocal, releasedLocal)
	l.Sold = max(l.Sold, sold)
	return nil
}

// SetHalted stops (true) or resumes (false) selling in the region.
func (l *Ledger) SetHalted(fence int64, halted bool) error {
	if err := l.fence(fence); err != nil {
		return err
	}
	l.Halted = halted
	return nil
}

// SaleView is what the region's agent last learned of the other regions
// (their sold and reserved) and the total, with when it wrote it (unix ms).
type SaleView struct {
	Total, OthersSold, OthersReserved, At int64
}

// SetView writes the sale view under the agent's fence, as set_view.lua.
func (l *Ledger) SetView(fence int64, v SaleView) error {
	if err := l.fence(fence); err != nil {
		return err
	}
	l.View = v
	return nil
}

// Resume ends a reconciliation: the region sells again under the new seller
// epoch, on primary, the primary the agent read when it started to
// reconcile; another one answers ErrNewPrimary and changes nothing (a
// failover during the reconciliation). It max-merges granted as ApplyGrant
// does, in the same step, so no grant lands on a primary not reconciled,
// and returns GrantedSeen. The agent records the epoch in etcd
// before it calls this, so the epoch never rolls back with lost writes.
func (l *Ledger) Resume(fence, epoch int64, primary string, granted int64) (int64, error) {
	if err := l.fence(fence); err != nil {
		return l.GrantedSeen, err
	}
	if primary != l.Primary {
		return l.GrantedSeen, ErrNewPrimary
	}
	l.Epoch, l.EpochPrimary, l.Halted = epoch, l.Primary, false
	l.GrantedSeen = max(l.GrantedSeen, granted)
	return l.GrantedSeen, nil
}

// Reserve reserves one unit for user under reservation id id, idempotent per
// requestID, for a seller that knows the seller epoch epoch. Checks run in
// this order, as in lib.lua's reserve_args: duplicate request (the earlier
// reservation is returned and id is unused), stopped (halted, or a primary
// not reconciled yet), epoch, per-user limit, stock, and last, only when a
// reservation would be made, an id already in use (ErrResvExists, nothing
// changed).
//
// The id is the caller's: opaque and unique across regions (the seller
// makes a ULID per request), so the ledger needs no sequence, and orders of
// several regions merge without collision.
func (l *Ledger) Reserve(epoch int64, id, user, requestID string, now, ttlMillis, perUserLimit int64) (Reservation, Outcome, error) {
	if old, ok := l.ByReq[requestID]; ok {
		return *l.Resv[old], Duplicate, nil
	}
	if l.Stopped() && !l.Bugs.ReserveIgnoresHalted {
		return Reservation{}, Halted, nil
	}
	if epoch != l.Epoch && !l.Bugs.ReserveIgnoresHalted {
		return Reservation{}, StaleEpoch, nil
	}
	if l.Users[user] >= perUserLimit {
		return Reservation{}, UserLimit, nil
	}
	if l.Available() <= 0 {
		return Reservation{}, SoldOut, nil
	}
	if _, ok := l.Resv[id]; ok {
		return Reservation{}, 0, ErrResvExists
	}
	r := &Reservation{ID: id, User: user, RequestID: requestID, ExpiresAt: now + ttlMillis}
	l.Resv[r.ID] = r
	l.ByReq[requestID] = r.ID
	l.Users[user]++
	l.Reserved++
	return *r, Reserved, nil
}

// Confirm turns an active reservation into a sale. While the region is
// stopped it answers ErrHalted, before anything else: a reservation a lost
// write erased reads as unknown then, but the reconciliation restores it,
// so "no such reservation" would be a wrong final answer. Then confirming
// a confirmed reservation again succeeds and changes nothing; a cancelled
// or expired one answers ErrNotActive.
func (l *Ledger) Confirm(id string) error {
	if l.Stopped() {
		return ErrHalted
	}
	r, ok := l.Resv[id]
	if !ok {
		return ErrNoSuchResv
	}
	switch r.State {
	case Confirmed:
		return nil
	case Active:
		l.sell(r)
		return nil
	case Expired:
		if l.Bugs.ConfirmExpired { // the unit went back to stock at expiry
			r.State = Confirmed
			l.Sold++
			l.Users[r.User]++
			return nil
		}
	}
	return ErrNotActive
}

// Cancel returns an active reservation's unit to stock and frees the user's
// slot. While the region is stopped it answers ErrHalted, as Confirm does
// (and a unit freed then is one the reconciliation has not counted yet).
// Then cancelling a cancelled reservation again succeeds and changes
// nothing; a confirmed or expired one answers ErrNotActive.
func (l *Ledger) Cancel(id string) error {
	if l.Stopped() {
		return ErrHalted
	}
	r, ok := l.Resv[id]
	if !ok {
		return ErrNoSuchResv
	}
	switch r.State {
	case Cancelled:
		return nil
	case Active:
		l.end(r, Cancelled)
		return nil
	}
	return ErrNotActive
}

// Expire ends at most limit active reservations whose ExpiresAt <= now, in
// order of (ExpiresAt, id as a string), as a Redis sorted set orders them, and returns their ids;
// none while the region is stopped.
func (l *Ledger) Expire(now int64, limit int) []string {
	// Nothing expires while the region is stopped: on a primary not yet
	// reconciled a reservation the lost writes had confirmed may look
	// active, and expiring it would return its unit to stock before the
	// agent restores the sale (as Confirm and Cancel are refused).
	if l.Stopped() {
		return nil
	}
	var due []*Reservation
	for _, r := range l.Resv {
		if r.State == Active && r.ExpiresAt <= now {
			due = append(due, r)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if due[i].ExpiresAt != due[j].ExpiresAt {
			return due[i].ExpiresAt < due[j].ExpiresAt
		}
		return due[i].ID < due[j].ID // a Redis sorted set breaks ties by member bytes
	})
	// expire.lua answers nothing for limit <= 0; a negative limit used to
	// panic here on due[:limit].
	limit = max(limit, 0)
	if len(due) > limit {
		due = due[:limit]
	}
	ids := make([]string, 0, len(due))
	for _, r := range due {
		l.end(r, Expired)
		ids = append(ids, r.ID)
	}
	return ids
}

// RestoreEnded ends an active reservation that a witness of the region's
// sales (the order store) saw end, in the state it saw: what orders.Restore
// does to it (restore.lua's "advanced"), with the counters recount.lua then
// sets. It is the agent's reconciliation, not a buyer's confirm or cancel:
// it runs while the region is halted, under the agent's fence, both of
// which the caller checks, as orders.Restore does. A reservation not active
// is left as it is (ErrNotActive: restore.lua's "same" or "conflict").
func (l *Ledger) RestoreEnded(id string, to ResvState) error {
	r, ok := l.Resv[id]
	switch {
	case !ok:
		return ErrNoSuchResv
	case r.State != Active:
		return ErrNotActive
	case to == Confirmed:
		l.sell(r)
	case to == Cancelled || to == Expired:
		l.end(r, to)
	}
	return nil
}

// sell and end are the only ways a reservation stops being active (as
// lib.lua's finish): sold, or its unit back in stock and its user's slot free.
func (l *Ledger) sell(r *Reservation) {
	r.State = Confirmed
	l.Reserved--
	l.Sold++
}

func (l *Ledger) end(r *Reservation, s ResvState) {
	r.State = s
	l.Reserved--
	l.Users[r.User]--
}
