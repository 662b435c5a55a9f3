package regional

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// DefaultReservationTTL is how long a reservation holds its unit when a
// sale spec does not say.
const DefaultReservationTTL = 10 * time.Minute

// Phase is what a shopper is told about a sale right now.
type Phase int

const (
	PhaseUpcoming Phase = iota // before StartsAt
	PhaseOpen                  // selling (as far as memory knows: Redis decides)
	PhasePaused                // paused by an operator
	PhaseEnded                 // after EndsAt, or ended by an operator
	PhaseSoldOut               // the whole sale is sold: every unit paid for, in every region
	PhaseHalted                // the region stopped selling to reconcile
	// PhaseQuotaPending: this region is dry but the sale still has units
	// that are neither sold nor reserved (in the pool or another region):
	// quota is on its way, so the buyer is told to retry (DESIGN L1).
	PhaseQuotaPending
	// PhaseAllReserved: every unit is sold or held by an unpaid
	// reservation. Sold out for now; units come back if reservations
	// expire or are cancelled.
	PhaseAllReserved
)

func (p Phase) String() string {
	switch p {
	case PhaseUpcoming:
		return "upcoming"
	case PhaseOpen:
		return "open"
	case PhasePaused:
		return "paused"
	case PhaseEnded:
		return "ended"
	case PhaseSoldOut:
		return "sold_out"
	case PhaseHalted:
		return "halted"
	case PhaseQuotaPending:
		return "quota_pending"
	case PhaseAllReserved:
		return "all_reserved"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Sales is the in-memory sale state the funnel answers from, so that
// not-started, ended, paused, halted, dry and sold-out requests cost no Redis
// I/O. Specs come from the config file now and from an etcd watch later
// (Put, Remove); stock flags come from script answers and periodic counter
// reads. Reads are lock-free: the map is copied on every (rare) write.
type Sales struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[string]*Sale]
}

// Sale is one sale's cached state.
type Sale struct {
	spec   atomic.Pointer[layout.SaleSpec]
	dry    atomic.Bool // this region could not reserve at the last look
	halted atomic.Bool
	stock  atomic.Pointer[redisstore.Stock] // the last counters and view read; nil before the first
	// marks counts sold-out answers from scripts; a counter read that
	// started before one must not clear the dry flag that answer set.
	marks atomic.Int64
	// maxEpoch is the highest seller epoch this seller has read for the
	// sale. Epochs only grow (the agent records each in etcd before Redis
	// has it), so a ledger showing a lower one lost writes: wiped whole
	// (FLUSHALL, a restart without AOF), it has no epoch left and reads as
	// not stopped. The seller holds it stopped itself until the agent
	// reconciles it under a newer epoch (DESIGN §4.5): the fence does not
	// live only in a key the lost writes took.
	maxEpoch atomic.Int64

	// wake is closed (and replaced) when the region stops being dry, so
	// requests held for quota (Server.holdForQuota) resume at once.
	wakeMu sync.Mutex
	wake   chan struct{}
}

// NewSales returns an empty cache.
func NewSales() *Sales {
	s := &Sales{}
	empty := map[string]*Sale{}
	s.m.Store(&empty)
	return s
}

// Put adds a sale or replaces its spec, keeping its stock flags. Zero
// PerUserLimit means 1; zero ReservationTTL means DefaultReservationTTL;
// empty State means active.
func (s *Sales) Put(spec layout.SaleSpec) error {
	if err := checkSpec(&spec); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	if sale, ok := old[spec.ID]; ok {
		sale.spec.Store(&spec)
		return nil
	}
	next := make(map[string]*Sale, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	sale := &Sale{wake: make(chan struct{})}
	sale.spec.Store(&spec)
	next[spec.ID] = sale
	s.m.Store(&next)
	return nil
}

// Remove forgets a sale: requests for it get 404 and its reservations are
// no longer swept here.
func (s *Sales) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	if _, ok := old[id]; !ok {
		return
	}
	next := make(map[string]*Sale, len(old))
	for k, v := range old {
		if k != id {
			next[k] = v
		}
	}
	s.m.Store(&next)
}

// Get returns the cached sale, or nil.
func (s *Sales) Get(id string) *Sale { return (*s.m.Load())[id] }

// IDs returns the known sale ids, sorted.
func (s *Sales) IDs() []string {
	m := *s.m.Load()
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Spec returns the sale's current spec.
func (s *Sale) Spec() layout.SaleSpec { return *s.spec.Load() }

// Phase says what the sale is at now, from memory only. The order matters:
// time and operator state first (they do not depend on Redis), then the
// stock flags learned from Redis.
func (s *Sale) Phase(now time.Time) Phase {
	spec := s.spec.Load()
	switch {
	case spec.State == layout.SaleEnded || (!spec.EndsAt.IsZero() && !now.Before(spec.EndsAt)):
		return PhaseEnded
	case spec.State == layout.SalePaused:
		return PhasePaused
	case now.Before(spec.StartsAt):
		return PhaseUpcoming
	case s.halted.Load():
		return PhaseHalted
	case s.dry.Load():
		return s.DryPhase()
	}
	return PhaseOpen
}

// DryPhase says why this region cannot reserve, from the last counters and
// view: PhaseSoldOut, PhaseAllReserved or PhaseQuotaPending, as quota.Refuse
// decides (the simulation checks DESIGN L1 through the same function). Only
// the first is final, and it is never wrong: sold counts only grow, so stale
// figures understate the sale's sold units, never overstate them.
func (s *Sale) DryPhase() Phase {
	st := s.stock.Load()
	if st == nil {
		return PhaseQuotaPending // nothing known yet: retry, never "sold out"
	}
	w, ok := wholeSale(st, s.dry.Load())
	if !ok {
		return PhaseQuotaPending
	}
	switch quota.Refuse(w.total, w.sold, w.used-w.sold) {
	case quota.SoldOutAll:
		return PhaseSoldOut
	case quota.AllReserved:
		return PhaseAllReserved
	}
	return PhaseQuotaPending
}

// saleWide is the whole sale's stock as one seller can know it.
type saleWide struct {
	total, sold, used int64 // used: sold plus reserved
}

// wholeSale adds this region's counters to the agent's view of the other
// regions. ok is false when the sale-wide figures are unknown: a region
// run by an agent (fence > 0) whose agent has not written a view yet. A
// region without an agent (fence 0: a seller run from a config file) is
// its own whole sale. dry says a script found no stock here: this region
// then uses at least its ceiling, whatever an older counter read said.
func wholeSale(st *redisstore.Stock, dry bool) (saleWide, bool) {
	c, v := st.Counters, st.View
	mine := c.Sold + c.Reserved
	if dry {
		mine = max(mine, c.Ceiling())
	}
	switch {
	case v.At > 0:
		return saleWide{total: v.Total, sold: v.OthersSold + c.Sold, used: v.OthersSold + v.OthersReserved + mine}, true
	case c.Fence == 0:
		return saleWide{total: c.Ceiling(), sold: c.Sold, used: mine}, true
	}
	return saleWide{}, false
}

// Remaining is what this region could still reserve at the last counter
// read (or -1 before the first).
func (s *Sale) Remaining() int64 {
	st := s.stock.Load()
	if st == nil {
		return -1
	}
	if s.dry.Load() {
		return 0
	}
	return st.Counters.Available()
}

// SaleRemaining is what the whole sale could still reserve: the total less
// every unit sold or reserved in any region; -1 when unknown.
func (s *Sale) SaleRemaining() int64 {
	st := s.stock.Load()
	if st == nil {
		return -1
	}
	w, ok := wholeSale(st, s.dry.Load())
	if !ok {
		return -1
	}
	return max(0, w.total-w.used)
}

// MarkDry records a script's sold-out answer: this region has no stock.
// Whether that means the sale is sold out is DryPhase's question.
func (s *Sale) MarkDry() {
	s.marks.Add(1)
	s.dry.Store(true)
}

// MaybeAvailable clears the dry flag after units came back (an expiry
// or a cancel): the next attempt asks Redis, which decides.
func (s *Sale) MaybeAvailable() { s.setAvailable() }

// setAvailable clears the dry flag and wakes the requests held for
// quota. The flag is cleared before the channel is swapped, so a holder
// that takes the new channel then finds the flag clear (holdForQuota).
func (s *Sale) setAvailable() {
	if !s.dry.Swap(false) {
		return
	}
	s.wakeMu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.wakeMu.Unlock()
}

// woken is the channel closed when the region next stops being dry.
func (s *Sale) woken() <-chan struct{} {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	return s.wake
}

// observe applies counters and view read from Redis. marksBefore is
// marksNow() taken before the read started: if a script answered sold-out
// since, the read may predate that answer and must not clear the flag.
//
// A read older than the one applied (by Redis' clock, ReadAt: a gossiped
// read can arrive after this seller's own newer one) is ignored; observe
// reports whether st was applied.
func (s *Sale) observe(st redisstore.Stock, marksBefore int64) bool {
	for {
		old := s.stock.Load()
		if old != nil && st.ReadAt != 0 && st.ReadAt < old.ReadAt {
			return false
		}
		if s.stock.CompareAndSwap(old, &st) {
			break
		}
	}
	raiseTo(&s.maxEpoch, st.Counters.Epoch)
	s.halted.Store(st.Counters.Halted || s.rolledBack(st.Counters))
	if st.Counters.Available() <= 0 {
		s.dry.Store(true)
	} else if s.marks.Load() == marksBefore {
		s.setAvailable()
	}
	return true
}

func (s *Sale) marksNow() int64 { return s.marks.Load() }

// refusedHalted answers a request Redis refused because the region is
// stopped (a script's halted, or the counters' Stopped), and remembers it:
// buys are answered from memory (PhaseHalted) until a counters read says
// otherwise.
func (s *Sale) refusedHalted() reply {
	s.halted.Store(true)
	return haltedReply(s.Spec().ID)
}

// raiseTo sets a to v if v is larger.
func raiseTo(a *atomic.Int64, v int64) {
	for m := a.Load(); v > m; m = a.Load() {
		if a.CompareAndSwap(m, v) {
			return
		}
	}
}

// rolledBack reports whether c shows an older seller epoch than this
// seller has read: the ledger lost writes (see maxEpoch).
func (s *Sale) rolledBack(c redisstore.Counters) bool {
	return c.Epoch < s.maxEpoch.Load()
}

// RolledBack reports whether the last counters read show a ledger that
// lost writes and is not reconciled yet (see maxEpoch).
func (s *Sale) RolledBack() bool {
	st := s.stock.Load()
	return st != nil && s.rolledBack(st.Counters)
}

// Epoch is the seller epoch of the last counters read (0 before the
// first): every reserve passes it, and the script refuses another
// (DESIGN §4.5).
func (s *Sale) Epoch() int64 {
	if st := s.stock.Load(); st != nil {
		return st.Counters.Epoch
	}
	return 0
}

// checkSpec validates a spec and fills its defaults in place.
func checkSpec(spec *layout.SaleSpec) error {
	switch {
	case !validID(spec.ID):
		return fmt.Errorf("sale id %q: want 1-64 characters of [A-Za-z0-9_.:-]", spec.ID)
	case spec.Total < 0:
		return fmt.Errorf("sale %s: Total %d: want >= 0", spec.ID, spec.Total)
	case spec.PerUserLimit < 0:
		return fmt.Errorf("sale %s: PerUserLimit %d: want >= 0 (0 means 1)", spec.ID, spec.PerUserLimit)
	case spec.ReservationTTL < 0:
		return fmt.Errorf("sale %s: ReservationTTL %v: want >= 0 (0 means %v)", spec.ID, spec.ReservationTTL, DefaultReservationTTL)
	case !spec.EndsAt.IsZero() && !spec.EndsAt.After(spec.StartsAt):
		return fmt.Errorf("sale %s: EndsAt %s: want after StartsAt %s", spec.ID, spec.EndsAt.Format(time.RFC3339), spec.StartsAt.Format(time.RFC3339))
	}
	switch spec.State {
	case "":
		spec.State = layout.SaleActive
	case layout.SaleActive, layout.SalePaused, layout.SaleEnded:
	default:
		return fmt.Errorf("sale %s: State %q: want active, paused or ended", spec.ID, spec.State)
	}
	if spec.PerUserLimit == 0 {
		spec.PerUserLimit = 1
	}
	if spec.ReservationTTL == 0 {
		spec.ReservationTTL = DefaultReservationTTL
	}
	return nil
}
