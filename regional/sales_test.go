package regional

import (
	"testing"
	"time"

	"flashsale/internal/layout"
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
	s.MarkSoldOut()
	if s.Phase(at) != PhaseSoldOut || s.Remaining() != -1 {
		t.Fatalf("after MarkSoldOut: %v, remaining %d", s.Phase(at), s.Remaining())
	}
	// A counter read that began before the sold-out answer must not undo it.
	marks := s.marksNow() - 1
	s.observe(3, false, marks)
	if s.Phase(at) != PhaseSoldOut {
		t.Fatal("a stale counter read cleared sold-out")
	}
	s.observe(3, false, s.marksNow())
	if s.Phase(at) != PhaseOpen || s.Remaining() != 3 {
		t.Fatalf("fresh counters with stock: %v, remaining %d", s.Phase(at), s.Remaining())
	}
	s.observe(0, true, s.marksNow())
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
