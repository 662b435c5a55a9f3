package quota

// Timing says when, relative to a sale's window, the planners switch.
type Timing struct {
	// SplitLeadMs: the initial split is made this long before the opening,
	// so every region holds quota at the opening second.
	SplitLeadMs int64
	// SweepBeforeMs: in the last this-long of a sale, EndSweep replaces
	// Rebalance (leftovers go where buyers still are).
	SweepBeforeMs int64
	// DemandLagMs is how long after the opening a report of no demand is
	// still no evidence of none: the sellers' attempt counts and the
	// agents' rate readings need a moment to show the first buyers.
	DemandLagMs int64
}

// Situation is everything outside the allocation that decides what to do
// for a sale now. Times are unix ms.
type Situation struct {
	Now      int64
	StartsAt int64
	EndsAt   int64 // 0: no end
	Paused   bool  // an operator paused the sale
	Ended    bool  // an operator ended the sale
	// Learning: a new leader that has not heard from every live region
	// since its election plans nothing (its picture predates it).
	Learning bool
	// Live names the regions whose agents hold a lease; the planners treat
	// any other region as never reported (nothing granted to it or asked of
	// it: it could not answer). Nil: every region is live.
	Live   map[string]bool
	Timing Timing
}

// Decide is "which plan now" for one sale, the one decision the
// coordinator's loop, its plan API and the simulation all make through
// here, so they cannot drift apart. It reads a (with its latest reports
// attached, acks already applied) and never changes it; the caller applies
// the plan with Apply. note names the planner that made the plan.
//
// Nothing is planned while learning, paused or ended, or before
// SplitLeadMs ahead of the opening. Then the initial split is made once
// (a sale is split once anything was ever granted); before the opening
// nothing else moves, so no region is asked to release before it sold
// anything. Once open, Rebalance, and in the sale's last SweepBeforeMs,
// EndSweep.
func (a *Allocation) Decide(s Situation) (plan Plan, note string, err error) {
	switch {
	case s.Learning, s.Paused, s.Ended,
		s.EndsAt != 0 && s.Now >= s.EndsAt,
		s.Now < s.StartsAt-s.Timing.SplitLeadMs:
		return Plan{}, "", nil
	}
	v := a.LiveView(s.Live)
	p := a.policy()
	open := s.Now >= s.StartsAt
	if open && a.split() {
		// A report from before the opening says nothing of demand after
		// it, nor one of no demand just after it: such a region is neither
		// topped up nor taken for idle until it reported demand, or none
		// for longer than the lag (its agent reports at once when buyers
		// come).
		v = v.reportedSince(s.StartsAt, s.StartsAt+s.Timing.DemandLagMs)
	}
	switch {
	case !a.split():
		plan, err = v.InitialSplit(p, s.Now)
		note = "initial split"
		if err == nil && plan.Empty() && open {
			// A split that grants nothing (SplitPercent 0, no minimums)
			// leaves everything to demand once the sale is open.
			plan, err = v.Rebalance(p, s.Now)
			note = "rebalance"
		}
	case !open:
		return Plan{}, "", nil
	case s.EndsAt != 0 && s.Now >= s.EndsAt-s.Timing.SweepBeforeMs:
		plan, err = v.EndSweep(p, s.Now)
		note = "end sweep"
	default:
		plan, err = v.Rebalance(p, s.Now)
		note = "rebalance"
	}
	if err != nil || plan.Empty() {
		return Plan{}, "", err
	}
	return plan, note, nil
}

// split says whether the initial split was made: any grant ever.
func (a *Allocation) split() bool {
	for _, r := range a.Regions {
		if r.Granted > 0 {
			return true
		}
	}
	return false
}

// LiveView is the copy of a the planners read (a itself when live is nil):
// a region not in live has no lease, so it is dead to them whatever its
// last stored report says (the stored report stays in a: agents use it as
// a floor).
func (a *Allocation) LiveView(live map[string]bool) *Allocation {
	if live == nil {
		return a
	}
	v := a.Clone()
	for name, r := range v.Regions {
		if !live[name] {
			r.Report = nil
		}
	}
	return v
}

// reportedSince is a copy of a without the reports dated before at, nor
// those of no demand dated before idleAt.
func (a *Allocation) reportedSince(at, idleAt int64) *Allocation {
	v := a.Clone()
	for _, r := range v.Regions {
		if rep := r.Report; rep != nil && (rep.At < at || !(rep.Demand > 0) && rep.At < idleAt) {
			r.Report = nil
		}
	}
	return v
}

// PolicyOf is the sale's policy: stored in its allocation at creation, so
// every leader plans a sale the same way; DefaultPolicy when none is.
func (a *Allocation) PolicyOf() Policy { return a.policy() }
