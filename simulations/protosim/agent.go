package protosim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/agent"
	"flashsale/regional/redisstore"
)

// agentProc is one region agent process: the real agent.Core of its
// current term, driven here as regional/agent's term.go drives it against
// etcd and Redis, through the fakes: the fake etcd's history for watches,
// the network for reads and report writes, and the region's quota.Ledger
// for Redis. A stale process (its lease expired during a pause) keeps
// acting until it notices; the fences must refuse it everywhere.
type agentProc struct {
	id      int
	core    *agent.Core
	fence   int64
	alive   bool
	stale   bool
	stopAt  int
	loading bool  // waiting for the read that (re)starts its watches
	loadID  int64 // the read it waits for
	loadAt  int
	// The watch streams: allocations and reports, each delivering etcd's
	// history in order from its next revision.
	streams [2]int64
	// stalled is the step until which each stream delivers nothing (a
	// slow watcher): etcd may compact the history it still needs.
	stalled [2]int
	puts    map[int64]int // etcd writes in flight: action id -> step sent
	tickAt  int
	// paused is a Redis write the process was about to send when it
	// paused (a GC pause, a stalled connection): its lease expired, a
	// successor took over, and the write goes out at resumeAt anyway.
	paused   *agent.Action
	resumeAt int
}

const (
	tickEvery  = 2  // steps between agent ticks (its ReportInterval)
	refreshMs  = 30 // steps of ReportRefresh
	getTimeout = 10 // steps before a read or write is taken as failed
	pDeliver   = 0.6
	pBreak     = 0.01  // a watch stream breaks (the agent watches again)
	pStall     = 0.002 // a watch stream stalls for a while
	pCrashAct  = 0.004
	pPause     = 0.004 // a process pauses before a Redis write, past its lease
)

const (
	streamAllocs = iota
	streamReports
)

// current is the region's agent that holds the election, or nil.
func (rg *region) current() *agentProc {
	for _, a := range rg.agents {
		if a.alive && !a.stale {
			return a
		}
	}
	return nil
}

// startTerm campaigns for region (a new fence) with process a, or with a
// new process when a is nil. Nothing can be elected while the region is
// cut off from etcd.
func (s *Sim) startTerm(rg *region, a *agentProc) {
	if s.net.cut[rg.name] {
		return
	}
	if a == nil {
		s.nextAgent++
		a = &agentProc{id: s.nextAgent, alive: true}
		if old := rg.current(); old != nil {
			old.stale = true
			old.stopAt = s.step + 5 + s.rng.IntN(25)
			s.tracef("%s agent term %d goes stale", rg.name, old.fence)
		}
		rg.agents = append(rg.agents, a)
	}
	a.fence = s.etcd.campaignAgent(rg.name)
	a.core = agent.NewCore(agent.CoreConfig{
		Region: rg.name, Fence: a.fence, ReportRefresh: time.Duration(refreshMs*s.cfg.StepMillis) * time.Millisecond,
		Bugs: agent.CoreBugs{NoMaxMerge: s.cfg.Bug == BugNoMaxMerge, NoReconcile: s.cfg.Bug == BugNoReconcile},
	})
	a.puts = map[int64]int{}
	a.tickAt = s.step + 1
	s.stats.AgentTerms++
	s.tracef("%s agent term %d starts", rg.name, a.fence)
	s.sendGet(rg, a)
}

func (s *Sim) sendGet(rg *region, a *agentProc) {
	s.nextGet++
	a.loading, a.loadID, a.loadAt = true, s.nextGet, s.step
	s.net.send(int64(s.step), msg{kind: mGet, region: rg.name, agent: a.id, getID: a.loadID})
}

// onLoaded delivers the read that (re)starts a process's watches.
func (s *Sim) onLoaded(rg *region, a *agentProc, m msg) {
	if !a.alive || !a.loading || m.getID != a.loadID {
		return
	}
	a.loading = false
	a.streams = [2]int64{m.rev + 1, m.rev + 1}
	s.stepAgent(rg, a, m.loaded)
}

// agentTick runs one step of a process: its watch streams, its tick, its
// writes' timeouts.
func (s *Sim) agentTick(rg *region, a *agentProc) {
	if !a.alive {
		return
	}
	if a.stale && s.step >= a.stopAt {
		a.alive = false
		s.tracef("%s agent term %d notices its lease is gone and stops", rg.name, a.fence)
		return
	}
	if a.paused != nil {
		if s.step >= a.resumeAt {
			act := *a.paused
			a.paused = nil
			s.tracef("%s agent term %d resumes after its pause: %v", rg.name, a.fence, act.Kind)
			if r, ok := s.runRedis(rg, a, act); ok {
				s.stepAgent(rg, a, r)
			}
		}
		return
	}
	if a.loading {
		if s.step-a.loadAt >= getTimeout {
			s.sendGet(rg, a)
		}
		return
	}
	var late []int64
	for id, at := range a.puts {
		if s.step-at >= getTimeout {
			late = append(late, id)
		}
	}
	slices.Sort(late) // map order is random; a run must replay exactly
	for _, id := range late {
		delete(a.puts, id)
		if !s.stepAgent(rg, a, agent.Result{ID: id, Err: errTimeout}) {
			return
		}
	}
	if !s.net.cut[rg.name] {
		for k := range a.streams {
			if !s.watch(rg, a, k) {
				return
			}
		}
	}
	if s.step >= a.tickAt {
		a.tickAt = s.step + tickEvery
		demand := map[string]float64{saleID: rg.demand * 1000 / float64(s.cfg.StepMillis)}
		s.stepAgent(rg, a, agent.Tick{Now: time.UnixMilli(s.now), Demand: demand})
	}
}

var (
	errTimeout   = errors.New("etcd request timed out")
	errNotHalted = errors.New("restore: the sale is not halted in this region")
)

// watch delivers some of stream k's pending history in order, or breaks
// it: the process watches again from a little before where it was (so
// events repeat), or, when that history is compacted, reads everything
// again. It returns false if the process stopped.
func (s *Sim) watch(rg *region, a *agentProc, k int) bool {
	if !s.heal && s.rng.Float64() < pBreak {
		from := max(1, a.streams[k]-int64(s.rng.IntN(4)))
		if _, ok := s.etcd.since(from); !ok {
			s.stats.Compacted++
			s.tracef("%s agent term %d: watch from %d compacted; reading again", rg.name, a.fence, from)
			s.sendGet(rg, a)
			return true
		}
		s.stats.Rewatches++
		a.streams[k] = from
		return true
	}
	if !s.heal && s.rng.Float64() < pStall {
		a.stalled[k] = s.step + 20 + s.rng.IntN(60)
	}
	if s.step < a.stalled[k] || s.rng.Float64() >= pDeliver {
		return true
	}
	changes, ok := s.etcd.since(a.streams[k])
	if !ok {
		s.stats.Compacted++
		s.sendGet(rg, a)
		return true
	}
	var ins []agent.Input
	for _, c := range changes {
		switch {
		case k == streamAllocs && c.alloc != nil:
			ins = append(ins, agent.AllocChanged{Sale: saleID, Alloc: c.alloc, ModRev: c.rev})
		case k == streamReports && c.report != nil:
			ins = append(ins, agent.ReportChanged{Region: c.report.Region, Sale: saleID, Report: c.report, ModRev: c.rev})
		case k == streamReports && c.gone != "":
			ins = append(ins, agent.ReportChanged{Region: c.gone, Sale: saleID, ModRev: c.rev})
		}
	}
	if len(changes) > 0 {
		a.streams[k] = changes[len(changes)-1].rev + 1
	}
	for _, in := range ins {
		if !s.stepAgent(rg, a, in) {
			return false
		}
	}
	return true
}

// stepAgent tells the process's core in and carries out what it asks, as
// term.step does: Redis actions at once on the region's ledger, etcd
// writes over the network. Any action may be the last before a crash. It
// returns false if the process stopped.
func (s *Sim) stepAgent(rg *region, a *agentProc, in agent.Input) bool {
	if err := a.core.Step(in); err != nil {
		return s.agentDeposed(rg, a, err)
	}
	for {
		acts := a.core.Ready()
		if len(acts) == 0 {
			return true
		}
		for _, act := range acts {
			if act.Kind != agent.ReadCounters && s.crashPoint("agent-before-"+act.Kind.String(), pCrashAct) {
				s.crashAgent(rg, a)
				return false
			}
			if act.Kind.Etcd() {
				a.puts[act.ID] = s.step
				s.net.send(int64(s.step), msg{kind: mPut, region: rg.name, agent: a.id, act: act})
				continue
			}
			if act.Kind != agent.ReadCounters && !a.stale && s.crashPoint("agent-pause-before-"+act.Kind.String(), pPause) {
				s.pauseAgent(rg, a, act)
				return false
			}
			r, ok := s.runRedis(rg, a, act)
			if !ok {
				return false
			}
			if err := a.core.Step(r); err != nil {
				return s.agentDeposed(rg, a, err)
			}
		}
	}
}

// runRedis runs one Redis action of process a; the process may crash
// right after it (false).
func (s *Sim) runRedis(rg *region, a *agentProc, act agent.Action) (agent.Result, bool) {
	r := s.redis(rg, a, act)
	if act.Kind != agent.ReadCounters && r.Err == nil && s.crashPoint("agent-after-"+act.Kind.String(), pCrashAct) {
		s.crashAgent(rg, a)
		return r, false
	}
	return r, true
}

// pauseAgent stops process a before it sends act, for longer than its
// lease: a successor is elected, and act goes out when the pause ends,
// after the successor wrote. The fences must refuse it (DESIGN I5).
func (s *Sim) pauseAgent(rg *region, a *agentProc, act agent.Action) {
	s.startTerm(rg, nil) // a goes stale
	if !a.stale {
		return // cut off: nobody can be elected; the write goes out now
	}
	s.stats.Pauses++
	a.paused, a.resumeAt = &act, s.step+3+s.rng.IntN(10)
	a.stopAt = max(a.stopAt, a.resumeAt+5)
	s.tracef("%s agent term %d pauses before %v until step %d", rg.name, a.fence, act.Kind, a.resumeAt)
}

// onPutAnswer delivers etcd's answer to a report write.
func (s *Sim) onPutAnswer(rg *region, a *agentProc, m msg) {
	if _, ok := a.puts[m.act.ID]; !ok || !a.alive {
		return
	}
	delete(a.puts, m.act.ID)
	r := agent.Result{ID: m.act.ID}
	if m.fenced {
		r.Deposed, r.Err = true, errFenced
	}
	s.stepAgent(rg, a, r)
}

func (s *Sim) agentDeposed(rg *region, a *agentProc, err error) bool {
	a.alive = false
	s.tracef("%s agent term %d steps down: %v", rg.name, a.fence, err)
	return false
}

// redis runs one action of process a on the region's ledger, as the real
// driver runs it on redisstore.Store, and checks I5: a write of an agent
// that lost its election is never accepted once its successor wrote.
func (s *Sim) redis(rg *region, a *agentProc, act agent.Action) agent.Result {
	l := rg.ledger
	r := agent.Result{ID: act.ID}
	before := l.Fence
	switch act.Kind {
	case agent.ReadCounters:
		r.Counters = redisstore.Counters{Fence: l.Fence, GrantedSeen: l.GrantedSeen, ReleasedLocal: l.ReleasedLocal, Sold: l.Sold,
			Reserved: l.Reserved, Halted: l.Halted, Epoch: l.Epoch, EpochPrimary: l.EpochPrimary, Primary: l.Primary}
		return r
	case agent.SetHalted:
		r.Err = l.SetHalted(act.Fence, act.Halted)
	case agent.RestoreOrders:
		s.stats.Reconciles++
		// As orders.Restore: only while halted (orders.ErrNotHalted), and
		// its scripts take the agent's fence as every agent script does.
		if !l.Halted {
			r.Err = errNotHalted
			break
		}
		if act.Fence < l.Fence && s.cfg.Bug != BugRestoreSkipsFence {
			r.Err = quota.ErrStaleFence
			break
		}
		l.Fence = max(l.Fence, act.Fence)
		s.replayOrders(rg)
		r.SoldFloor = s.orderStoreSold(rg)
	case agent.RaiseFloor:
		if l.ReleasedLocal < act.ReleasedLocal || l.Sold < act.Sold {
			s.stats.LostDetected++
		}
		r.Err = l.RaiseFloor(act.Fence, act.ReleasedLocal, act.Sold)
	case agent.ApplyGrant:
		r.GrantedSeen, r.Err = l.ApplyGrant(act.Fence, act.Granted)
	case agent.Release:
		p := act.Release
		r.M, r.ReleasedLocal, r.Err = l.Release(act.Fence, act.Epoch, p.ID, p.Units, p.Keep)
		if r.Err == nil {
			s.tracef("%s agent term %d released %d of %s (released_local %d)", rg.name, a.fence, r.M, p.ID, r.ReleasedLocal)
		}
	case agent.Resume:
		r.GrantedSeen, r.Err = l.Resume(act.Fence, act.Epoch, act.Primary, act.Granted)
		if r.Err == nil {
			s.tracef("%s agent term %d resumes selling under epoch %d", rg.name, a.fence, act.Epoch)
			s.reconciled(rg) // sellers may sell under it in this very step
		}
	case agent.SetView:
		r.Err = l.SetView(act.Fence, quota.SaleView{Total: act.View.Total, OthersSold: act.View.OthersSold,
			OthersReserved: act.View.OthersReserved, At: act.View.At})
	default:
		r.Err = fmt.Errorf("unknown action %v", act.Kind)
	}
	if r.Err != nil {
		if errors.Is(r.Err, quota.ErrStaleFence) {
			s.stats.StaleRefused++
		}
		s.tracef("%s agent term %d: %v refused: %v", rg.name, a.fence, act.Kind, r.Err)
	} else if before > act.Fence {
		s.violate("I5", "%s: %v of agent term %d accepted after term %d wrote", rg.name, act.Kind, act.Fence, before)
	}
	return r
}

func (s *Sim) crashAgent(rg *region, a *agentProc) {
	a.alive = false
	s.stats.AgentCrashes++
	rg.agentDownUntil = s.step + 5 + s.rng.IntN(25)
	s.tracef("%s agent term %d crashes", rg.name, a.fence)
}

// loaded is the read an agent process gets: everything at one revision.
func (e *etcd) loaded(now int64) agent.Loaded {
	in := agent.Loaded{Rev: e.rev, Now: time.UnixMilli(now),
		Allocs: map[string]*quota.Allocation{saleID: e.alloc},
		Sales:  map[string]*layout.SaleSpec{saleID: {ID: saleID}}}
	for _, sr := range e.reports {
		in.Reports = append(in.Reports, sr.rep)
	}
	slices.SortFunc(in.Reports, func(a, b layout.RegionReport) int { return strings.Compare(a.Region, b.Region) })
	return in
}
