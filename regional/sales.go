package regional

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"flashsale/internal/layout"
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
	PhaseSoldOut               // no stock left in this region at the last look
	PhaseHalted                // the region stopped selling to reconcile
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
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Sales is the in-memory sale state the funnel answers from, so that
// not-started, ended, paused, halted and sold-out requests cost no Redis
// I/O. Specs come from the config file now and from an etcd watch later
// (Put, Remove); stock flags come from script answers and periodic counter
// reads. Reads are lock-free: the map is copied on every (rare) write.
type Sales struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[string]*Sale]
}

// Sale is one sale's cached state.
type Sale struct {
	spec      atomic.Pointer[layout.SaleSpec]
	soldOut   atomic.Bool
	halted    atomic.Bool
	remaining atomic.Int64
	counted   atomic.Bool // counters were read at least once
	// marks counts sold-out answers from scripts; a counter read that
	// started before one must not clear the flag that answer set.
	marks atomic.Int64
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
	sale := &Sale{}
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
	case s.soldOut.Load():
		return PhaseSoldOut
	}
	return PhaseOpen
}

// Remaining is what this region could still reserve at the last counter
// read (or -1 before the first).
func (s *Sale) Remaining() int64 {
	if !s.counted.Load() {
		return -1
	}
	return s.remaining.Load()
}

// MarkSoldOut records a sold-out script answer.
func (s *Sale) MarkSoldOut() {
	s.marks.Add(1)
	s.soldOut.Store(true)
	s.remaining.Store(0)
}

// MaybeAvailable clears the sold-out flag after units came back (an expiry
// or a cancel): the next attempt asks Redis, which decides.
func (s *Sale) MaybeAvailable() { s.soldOut.Store(false) }

// observe applies counters read from Redis. marksBefore is Marks() taken
// before the read started: if a script answered sold-out since, the read
// may predate that answer and must not clear the flag.
func (s *Sale) observe(available int64, halted bool, marksBefore int64) {
	s.halted.Store(halted)
	s.remaining.Store(available)
	s.counted.Store(true)
	if available <= 0 {
		s.soldOut.Store(true)
	} else if s.marks.Load() == marksBefore {
		s.soldOut.Store(false)
	}
}

func (s *Sale) marksNow() int64 { return s.marks.Load() }

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
