package quota_test

import (
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"flashsale/quota"
)

// TestPropertyNoOversell drives one sale through random sequences of every
// operation the coordinator and the agents perform, with the network's
// worst habits: grants seen late, out of order and twice; releases run
// twice; acks duplicated, reordered and stale. The reference is a single
// global counter of stock (the design everyone would build in one region):
// every reservation the regions accept must also be one it would accept.
func TestPropertyNoOversell(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := newSim(t)
		t.Repeat(map[string]func(*rapid.T){
			"grant":          s.grant,
			"plan":           s.planAndApply,
			"tick":           s.tick,
			"deliver grant":  s.deliverGrant,
			"run release":    s.runRelease,
			"deliver ack":    s.deliverAck,
			"report":         s.report,
			"reserve":        s.reserve,
			"confirm/cancel": s.endReservation,
			"expire":         s.expire,
			"halt/reconcile": s.haltReconcile,
			"advance":        func(t *rapid.T) { s.now += rapid.Int64Range(0, 3000).Draw(t, "ms") },
			"":               s.check,
		})
	})
}

type grantSeen struct {
	region  string
	granted int64
}

type ackMsg struct {
	region, id    string
	releasedLocal int64
	asReport      bool
}

type sim struct {
	a        *quota.Allocation
	names    []string
	ledgers  map[string]*quota.Ledger
	grants   []grantSeen            // watch events the agents may see, in any order, any number of times
	releases []quota.ReleaseRequest // release requests the agents may run, any number of times
	acks     []ackMsg               // acks in flight
	ref      int64                  // the reference: one global counter of unreserved stock
	now      int64
}

func newSim(t *rapid.T) *sim {
	total := rapid.Int64Range(0, 200).Draw(t, "total")
	names := []string{"ap", "eu", "sa", "us"}[:rapid.IntRange(1, 4).Draw(t, "regions")]
	a := quota.NewAllocation("s", total, names...)
	for _, n := range names {
		r := a.Regions[n]
		r.Weight = rapid.Int64Range(0, 3).Draw(t, "weight")
		r.Min = rapid.Int64Range(0, 10).Draw(t, "min")
		if rapid.Bool().Draw(t, "bounded") {
			r.Max = rapid.Int64Range(r.Min, r.Min+50).Draw(t, "max")
		}
	}
	a.Policy = &quota.Policy{
		SplitPercent: rapid.Int64Range(0, 100).Draw(t, "split"),
		HorizonMs:    rapid.Int64Range(1, 2000).Draw(t, "horizon"),
		StaleAfterMs: rapid.Int64Range(1, 5000).Draw(t, "stale"),
		MinKeep:      rapid.Int64Range(0, 5).Draw(t, "keep"),
	}
	s := &sim{a: a, names: names, ledgers: map[string]*quota.Ledger{}, ref: total}
	for _, n := range names {
		s.ledgers[n] = quota.NewLedger()
	}
	return s
}

func (s *sim) region(t *rapid.T) string { return rapid.SampledFrom(s.names).Draw(t, "region") }

// issue records what the caller must carry out: the cumulative granted
// value the agent will read from etcd, and release requests to run.
func (s *sim) issue(acts quota.Actions) {
	for _, g := range acts.Grants {
		s.grants = append(s.grants, grantSeen{g.Region, s.a.Regions[g.Region].Granted})
	}
	s.releases = append(s.releases, acts.Releases...)
}

func (s *sim) grant(t *rapid.T) {
	r := s.region(t)
	n := rapid.Int64Range(-2, s.a.Total+2).Draw(t, "n")
	pool := s.a.Unallocated()
	err := s.a.Grant(r, n)
	if want := n < 0 || n > pool; (err != nil) != want {
		t.Fatalf("grant %d with %d unallocated: err %v", n, pool, err)
	}
	if err == nil {
		s.issue(quota.Actions{Grants: []quota.Grant{{Region: r, Units: n}}})
	}
}

// planAndApply makes a plan with a random planner; a plan made on the
// current state must apply cleanly.
func (s *sim) planAndApply(t *rapid.T) {
	pol := *s.a.Policy
	var p quota.Plan
	var err error
	switch kind := rapid.SampledFrom([]string{"split", "rebalance", "sweep", "drain", "move"}).Draw(t, "planner"); kind {
	case "split":
		p, err = s.a.InitialSplit(pol, s.now)
	case "rebalance":
		p, err = s.a.Rebalance(pol, s.now)
	case "sweep":
		p, err = s.a.EndSweep(pol, s.now)
	case "drain":
		p, err = s.a.Drain(s.region(t), rapid.Bool().Draw(t, "spread"))
	case "move":
		p, err = s.a.Move(s.region(t), s.region(t), rapid.Int64Range(-1, 30).Draw(t, "n"))
	}
	if err != nil {
		return // refusals are the planners' business; the datadriven tests pin them
	}
	acts, err := s.a.Apply(p)
	if err != nil {
		t.Fatalf("plan %+v made on this state does not apply: %v", p, err)
	}
	s.issue(acts)
}

func (s *sim) tick(t *rapid.T) {
	acts, err := s.a.Step(quota.Tick{Now: s.now})
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	s.issue(acts)
}

func (s *sim) deliverGrant(t *rapid.T) {
	if len(s.grants) == 0 {
		t.Skip("no grant in flight")
	}
	i := rapid.IntRange(0, len(s.grants)-1).Draw(t, "grant")
	g := s.grants[i]
	if _, err := s.ledgers[g.region].ApplyGrant(1, g.granted); err != nil {
		t.Fatalf("apply grant: %v", err)
	}
	if rapid.Bool().Draw(t, "consume") { // else it may be seen again
		s.grants = append(s.grants[:i], s.grants[i+1:]...)
	}
}

func (s *sim) runRelease(t *rapid.T) {
	if len(s.releases) == 0 {
		t.Skip("no release requested")
	}
	req := rapid.SampledFrom(s.releases).Draw(t, "release")
	_, rl, err := s.ledgers[req.Region].Release(1, 0, req.ID, req.Units, req.Keep)
	if errors.Is(err, quota.ErrHalted) {
		t.Skip("the region is halted: it releases nothing until reconciled")
	}
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	s.acks = append(s.acks, ackMsg{req.Region, req.ID, rl, rapid.Bool().Draw(t, "as report")})
}

func (s *sim) deliverAck(t *rapid.T) {
	if len(s.acks) == 0 {
		t.Skip("no ack in flight")
	}
	i := rapid.IntRange(0, len(s.acks)-1).Draw(t, "ack")
	m := s.acks[i]
	var ev quota.Event = quota.ReleaseAcked{Region: m.region, ID: m.id, ReleasedLocal: m.releasedLocal}
	if m.asReport {
		ev = quota.RegionReported{Region: m.region, ReleaseID: m.id,
			Report: quota.Report{ReleasedLocal: m.releasedLocal, At: s.now}}
	}
	acts, err := s.a.Step(ev)
	if err != nil && !errors.Is(err, quota.ErrNotPending) {
		t.Fatalf("ack %+v: %v", m, err)
	}
	s.issue(acts)
	if rapid.Bool().Draw(t, "consume") { // else it may be delivered again
		s.acks = append(s.acks[:i], s.acks[i+1:]...)
	}
}

func (s *sim) report(t *rapid.T) {
	r := s.region(t)
	l := s.ledgers[r]
	rep := quota.Report{Sold: l.Sold, Reserved: l.Reserved, ReleasedLocal: l.ReleasedLocal, GrantedSeen: l.GrantedSeen,
		Demand: rapid.Float64Range(0, 100).Draw(t, "demand"), At: s.now - rapid.Int64Range(0, 6000).Draw(t, "age")}
	acts, err := s.a.Step(quota.RegionReported{Region: r, Report: rep})
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	s.issue(acts)
}

func (s *sim) reserve(t *rapid.T) {
	l := s.ledgers[s.region(t)]
	user := fmt.Sprintf("u%d", rapid.IntRange(0, 9).Draw(t, "user"))
	req := fmt.Sprintf("q%d", rapid.IntRange(0, 40).Draw(t, "req"))
	id := fmt.Sprint(len(l.Resv) + 1)
	if _, out, err := l.Reserve(0, id, user, req, s.now, rapid.Int64Range(1, 5000).Draw(t, "ttl"), 2); err != nil {
		t.Fatalf("reserve %s: %v", id, err)
	} else if out == quota.Reserved {
		s.ref--
		if s.ref < 0 {
			t.Fatalf("oversold: the global counter refuses this reservation")
		}
	}
}

func (s *sim) endReservation(t *rapid.T) {
	l := s.ledgers[s.region(t)]
	id := fmt.Sprint(rapid.IntRange(1, len(l.Resv)+1).Draw(t, "resv"))
	wasActive := l.Resv[id] != nil && l.Resv[id].State == quota.Active
	if rapid.Bool().Draw(t, "confirm") {
		_ = l.Confirm(id) // a confirmed unit stays taken: the reference does not move
		return
	}
	if l.Cancel(id) == nil && wasActive {
		s.ref++
	}
}

func (s *sim) expire(t *rapid.T) {
	l := s.ledgers[s.region(t)]
	s.ref += int64(len(l.Expire(s.now, rapid.IntRange(-1, 5).Draw(t, "limit"))))
}

// haltReconcile stops or resumes a region's selling, raising its floors
// to what etcd knows on resume, as the agent does after a restart.
func (s *sim) haltReconcile(t *rapid.T) {
	r := s.region(t)
	l := s.ledgers[r]
	halt := rapid.Bool().Draw(t, "halt")
	if !halt {
		if err := l.RaiseFloor(1, s.a.Regions[r].Released, l.Sold); err != nil {
			t.Fatalf("raise floor: %v", err)
		}
	}
	if err := l.SetHalted(1, halt); err != nil {
		t.Fatalf("set halted: %v", err)
	}
}

// check holds after every step: I2 in etcd and across to each region's
// Redis, I1 over all regions, and the reference agrees on what is taken.
func (s *sim) check(t *rapid.T) {
	if err := s.a.Check(); err != nil {
		t.Fatal(err)
	}
	if s.a.SumNet() > s.a.Total {
		t.Fatalf("sum of net grants %d above total %d", s.a.SumNet(), s.a.Total)
	}
	var taken int64
	for _, n := range s.names {
		l, r := s.ledgers[n], s.a.Regions[n]
		if l.GrantedSeen > r.Granted || l.ReleasedLocal < r.Released || l.Ceiling() > r.Net() {
			t.Fatalf("%s: ledger granted_seen %d released_local %d ceiling %d; etcd granted %d released %d net %d",
				n, l.GrantedSeen, l.ReleasedLocal, l.Ceiling(), r.Granted, r.Released, r.Net())
		}
		taken += l.Sold + l.Reserved
	}
	if taken > s.a.Total || taken != s.a.Total-s.ref {
		t.Fatalf("sold+reserved %d, total %d, reference has %d left", taken, s.a.Total, s.ref)
	}
}

// TestPropertySplit checks the weighted split on random bounds: within each
// region's min and max, never above the pool, all of the asked amount when
// some region can take more, each unbounded region within one unit of its
// exact share, and the same plan every time.
func TestPropertySplit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		total := rapid.Int64Range(0, 10000).Draw(t, "total")
		names := []string{"ap", "eu", "sa", "us", "za"}[:rapid.IntRange(1, 5).Draw(t, "regions")]
		a := quota.NewAllocation("s", total, names...)
		bounded := false
		for _, n := range names {
			r := a.Regions[n]
			r.Weight = rapid.Int64Range(0, 100).Draw(t, "weight")
			if rapid.Bool().Draw(t, "bounds") {
				bounded = true
				r.Min = rapid.Int64Range(0, total/int64(len(names))).Draw(t, "min")
				r.Max = rapid.Int64Range(max(r.Min, 1), total+1).Draw(t, "max")
			}
		}
		pol := quota.DefaultPolicy()
		pol.SplitPercent = rapid.Int64Range(0, 100).Draw(t, "split")
		p, err := a.InitialSplit(pol, 0)
		if err != nil {
			t.Fatalf("split: %v", err)
		}
		again, _ := a.Clone().InitialSplit(pol, 0)
		if fmt.Sprint(p) != fmt.Sprint(again) {
			t.Fatalf("not deterministic: %v then %v", p, again)
		}
		if _, err := a.Apply(p); err != nil {
			t.Fatalf("apply %v: %v", p, err)
		}
		var sum, mins, wsum int64
		canTake := false
		for _, n := range names {
			r := a.Regions[n]
			if r.Net() < r.Min || (r.Max > 0 && r.Net() > r.Max) {
				t.Fatalf("%s: net %d outside [%d, %d]", n, r.Net(), r.Min, r.Max)
			}
			sum += r.Net()
			mins += r.Min
			wsum += r.Weight
			canTake = canTake || (r.Weight > 0 && (r.Max == 0 || r.Net() < r.Max))
		}
		asked := max(total*pol.SplitPercent/100, mins)
		if sum > total || (canTake && sum != asked) {
			t.Fatalf("granted %d of total %d, asked %d", sum, total, asked)
		}
		if bounded || wsum == 0 {
			return
		}
		for _, n := range names {
			exact := float64(asked) * float64(a.Regions[n].Weight) / float64(wsum)
			if d := float64(a.Regions[n].Net()) - exact; d <= -1 || d >= 1 {
				t.Fatalf("%s got %d, exact share %.2f", n, a.Regions[n].Net(), exact)
			}
		}
	})
}
