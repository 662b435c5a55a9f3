package regional

import (
	"testing"
	"time"

	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

func TestSalePhases(t *testing.T) {
	start := time.Unix(10_000, 0)
	sales := NewSales()
	if err := sales.Put(layout.SaleSpec{ID: "s", Total: 10, StartsAt: start, EndsAt: start.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	s := sales.Get("s")
	if spec := s.Spec(); spec.PerUserLimit != 1 || spec.ReservationTTL != DefaultReservationTTL || spec.State != layout.SaleActive {
		t.Fatalf("defaults not filled: %+v", spec)
	}
	for _, tc := range []struct {
		at   time.Time
		want Phase
	}{
		{start.Add(-time.Second), PhaseUpcoming},
		{start, PhaseOpen},
		{start.Add(time.Hour), PhaseEnded},
	} {
		if got := s.Phase(tc.at); got != tc.want {
			t.Errorf("phase at %v: %v, want %v", tc.at, got, tc.want)
		}
	}
	at := start.Add(time.Minute)
	s.MarkDry()
	// Dry with nothing read yet: never "sold out".
	if s.Phase(at) != PhaseQuotaPending || s.Remaining() != -1 || s.SaleRemaining() != -1 {
		t.Fatalf("after MarkDry: %v, remaining %d / %d", s.Phase(at), s.Remaining(), s.SaleRemaining())
	}
	// A counter read that began before the sold-out answer must not undo it.
	stock := func(available int64, halted bool) redisstore.Stock {
		return redisstore.Stock{Counters: redisstore.Counters{GrantedSeen: 10, Reserved: 10 - available, Halted: halted}}
	}
	marks := s.marksNow() - 1
	s.observe(stock(3, false), marks)
	if s.Phase(at) == PhaseOpen {
		t.Fatal("a stale counter read cleared the dry flag")
	}
	s.observe(stock(3, false), s.marksNow())
	if s.Phase(at) != PhaseOpen || s.Remaining() != 3 || s.SaleRemaining() != 3 {
		t.Fatalf("fresh counters with stock: %v, remaining %d / %d", s.Phase(at), s.Remaining(), s.SaleRemaining())
	}
	s.observe(stock(0, true), s.marksNow())
	if s.Phase(at) != PhaseHalted {
		t.Fatalf("halted counters: %v", s.Phase(at))
	}
	// Operator state wins over stock; Put keeps the stock flags.
	if err := sales.Put(layout.SaleSpec{ID: "s", Total: 10, StartsAt: start, State: layout.SalePaused}); err != nil {
		t.Fatal(err)
	}
	if sales.Get("s") != s || s.Phase(at) != PhasePaused {
		t.Fatalf("after Put paused: %v", s.Phase(at))
	}
	sales.Remove("s")
	if sales.Get("s") != nil || len(sales.IDs()) != 0 {
		t.Fatal("Remove kept the sale")
	}
}

func TestSaleSpecRejected(t *testing.T) {
	start := time.Unix(10_000, 0)
	for name, spec := range map[string]layout.SaleSpec{
		"bad id":         {ID: "a b", StartsAt: start},
		"negative total": {ID: "s", Total: -1, StartsAt: start},
		"ends first":     {ID: "s", StartsAt: start, EndsAt: start.Add(-time.Second)},
		"bad state":      {ID: "s", StartsAt: start, State: "open"},
		"negative ttl":   {ID: "s", StartsAt: start, ReservationTTL: -time.Second},
	} {
		if err := NewSales().Put(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestDryPhase: why a dry region cannot sell, from its counters and the
// agent's view of the other regions. Only a sale sold everywhere is
// sold_out; a view never written means "unknown" in a region run by an
// agent, and "this region is the whole sale" in one run from a config file.
func TestDryPhase(t *testing.T) {
	view := func(total, sold, reserved int64) redisstore.SaleView {
		return redisstore.SaleView{Total: total, OthersSold: sold, OthersReserved: reserved, At: 1}
	}
	for _, tc := range []struct {
		name      string
		c         redisstore.Counters
		v         redisstore.SaleView
		dry       bool
		want      Phase
		remaining int64
	}{
		{"stock elsewhere", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 4, Reserved: 6}, view(100, 20, 10), true, PhaseQuotaPending, 60},
		{"pool left", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 10}, view(100, 80, 0), true, PhaseQuotaPending, 10},
		{"all held", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 4, Reserved: 6}, view(30, 15, 5), true, PhaseAllReserved, 0},
		{"all sold", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 10}, view(30, 20, 0), true, PhaseSoldOut, 0},
		{"stale counters, script said dry", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 2}, view(20, 10, 0), true, PhaseAllReserved, 0},
		{"agent, no view yet", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 10}, redisstore.SaleView{}, true, PhaseQuotaPending, -1},
		{"config file, all sold", redisstore.Counters{GrantedSeen: 10, Sold: 10}, redisstore.SaleView{}, true, PhaseSoldOut, 0},
		{"config file, all held", redisstore.Counters{GrantedSeen: 10, Sold: 4, Reserved: 6}, redisstore.SaleView{}, true, PhaseAllReserved, 0},
		{"open", redisstore.Counters{Fence: 3, GrantedSeen: 10, Sold: 4}, view(30, 5, 5), false, PhaseOpen, 16},
	} {
		s := &Sale{wake: make(chan struct{})}
		s.spec.Store(&layout.SaleSpec{ID: "s", Total: 30})
		s.observe(redisstore.Stock{Counters: tc.c, View: tc.v}, s.marksNow())
		if tc.dry {
			s.MarkDry()
		}
		if got := s.Phase(time.Unix(1, 0)); got != tc.want || s.SaleRemaining() != tc.remaining {
			t.Errorf("%s: phase %v, remaining %d; want %v, %d", tc.name, got, s.SaleRemaining(), tc.want, tc.remaining)
		}
	}
}

// TestWakeHolders: a region that stops being dry wakes every holder at
// once; one that stays dry wakes nobody.
func TestWakeHolders(t *testing.T) {
	s := &Sale{wake: make(chan struct{})}
	s.spec.Store(&layout.SaleSpec{ID: "s"})
	s.MarkDry()
	w := s.woken()
	s.observe(redisstore.Stock{Counters: redisstore.Counters{GrantedSeen: 1, Reserved: 1}}, s.marksNow())
	select {
	case <-w:
		t.Fatal("woken while still dry")
	default:
	}
	s.observe(redisstore.Stock{Counters: redisstore.Counters{GrantedSeen: 2, Reserved: 1}}, s.marksNow())
	select {
	case <-w:
	default:
		t.Fatal("not woken when stock arrived")
	}
	if s.woken() == w {
		t.Fatal("the closed channel was not replaced")
	}
}
