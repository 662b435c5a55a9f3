package protosim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"

	"flashsale/quota"
)

const saleID = "sale"

// region is one region's Redis (the ledger), its agents, its sellers' epoch
// and its buyers.
type region struct {
	name   string
	ledger *quota.Ledger

	// primaries counts the Redis primaries the region had: a failover
	// makes a new one (quota.Ledger.Primary), which sells nothing until
	// the agent reconciled it. sellerEpoch is the seller epoch the sellers
	// last read with their counters; they pass it to every reserve.
	primaries   int
	sellerEpoch int64
	refreshAt   int  // when the sellers next read their counters
	lost        bool // the store lost writes and the agent has not reconciled yet

	agents         []*agentProc
	agentDownUntil int
	cutUntil       int
	// leaseless: no agent of the region holds a lease (none runs, or it is
	// cut off from etcd) since leaselessAt; after leaseSteps its report
	// key, on the lease, is deleted.
	leaseless   bool
	leaselessAt int

	snapshot *quota.Ledger // what a lagging replica holds; a failover restores it
	snapAt   []int
	failAt   []int

	rate   float64 // buyer attempts per step now
	demand float64 // recent attempts per step, which the agent reports

	held   int64 // units buyers hold: reserved, confirmed, or erased by a failover
	active []*purchase
	byReq  map[string]*purchase // every purchase, by request id
}

// Sim is one seeded run. Use Run.
type Sim struct {
	cfg   Config
	rng   *rand.Rand
	step  int
	now   int64
	heal  bool
	stats Stats
	fail  *Violation

	net             *network
	etcd            *etcd
	coords          []*coordinator
	nextCoord       int
	leaderDownUntil int
	regions         []*region
	byName          map[string]*region
	nextGet         int64
	nextAgent       int
	nextUser        int64
	prevGranted     map[string]int64
	prevReleased    map[string]int64
}

// Run simulates one sale and returns its statistics and the first violated
// invariant, if any. The error is for a bad Config only.
func Run(cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, fmt.Errorf("protosim: %w", err)
	}
	s := newSim(cfg)
	total := cfg.MainSteps + cfg.HealSteps
	for s.step = 0; s.step < total && s.fail == nil; s.step++ {
		s.now = int64(s.step) * cfg.StepMillis
		if s.step == cfg.MainSteps {
			s.startHeal()
			if cfg.Burst {
				s.startBurst()
			}
		}
		s.faults()
		s.deliver()
		for _, rg := range s.regions {
			s.reconciled(rg)
		}
		for _, c := range s.coords {
			s.coordTick(c)
		}
		for _, rg := range s.regions {
			for _, a := range rg.agents {
				s.agentTick(rg, a)
			}
		}
		if !s.heal && s.step%demandShiftEvery == 0 {
			s.shiftDemand()
		}
		for _, rg := range s.regions {
			s.buyers(rg)
		}
		s.prune()
		s.check()
		s.traceState()
	}
	if s.fail == nil {
		s.step = total
		s.finish()
	}
	return Result{Seed: cfg.Seed, Stats: s.stats, Violation: s.fail}, nil
}

func newSim(cfg Config) *Sim {
	s := &Sim{
		cfg:          cfg,
		rng:          rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		byName:       map[string]*region{},
		prevGranted:  map[string]int64{},
		prevReleased: map[string]int64{},
	}
	s.net = newNetwork(s.rng, &s.stats)
	names := slices.Clone(regionNames[:cfg.Regions])
	slices.Sort(names)
	alloc := quota.NewAllocation(saleID, cfg.Total, names...)
	alloc.Policy = &quota.Policy{
		SplitPercent: quota.DefaultPolicy().SplitPercent,
		HorizonMs:    20 * cfg.StepMillis, // the sale is short: hold 20 steps of demand
		StaleAfterMs: 100 * cfg.StepMillis,
		MinKeep:      2,
	}
	s.etcd = newEtcd(alloc)
	s.etcd.noFence = cfg.Bug == BugNoFence
	for _, n := range names {
		rg := &region{name: n, ledger: quota.NewLedger(), byReq: map[string]*purchase{}}
		s.newPrimary(rg)
		s.scheduleFailovers(rg)
		s.regions = append(s.regions, rg)
		s.byName[n] = rg
	}
	s.electLeader()
	for _, rg := range s.regions {
		s.startTerm(rg, nil)
	}
	return s
}

func (s *Sim) deliver() {
	step := int64(s.step)
	for _, m := range s.net.due(step) {
		rg := s.byName[m.region]
		switch m.kind {
		case mGet:
			s.net.send(step, msg{kind: mLoaded, region: m.region, agent: m.agent, getID: m.getID, rev: s.etcd.rev, loaded: s.etcd.loaded(s.now)})
		case mLoaded:
			if a := rg.agent(m.agent); a != nil {
				s.onLoaded(rg, a, m)
			}
		case mPut:
			s.putReport(rg, m)
		case mPutAnswer:
			if a := rg.agent(m.agent); a != nil {
				s.onPutAnswer(rg, a, m)
			}
		case mReportEvent:
			for _, c := range s.coords {
				if c.id == m.coord {
					s.onReportEvent(c, storedReport{rep: m.report, modRev: m.modRev}, m.gone)
				}
			}
		}
	}
}

// putReport applies an agent's fenced report write and answers it.
func (s *Sim) putReport(rg *region, m msg) {
	step := int64(s.step)
	var a *agentProc
	if a = rg.agent(m.agent); a == nil {
		a = &agentProc{} // a crashed process's write still lands
	}
	rep := *m.act.Report
	modRev, err := s.etcd.putReport(m.act.Fence, rep)
	if err != nil {
		s.stats.FencedReports++
		s.tracef("etcd refuses %s report of term %d: %v", m.region, m.act.Fence, err)
		s.net.send(step, msg{kind: mPutAnswer, region: m.region, agent: m.agent, act: m.act, fenced: true})
		return
	}
	if a.stale {
		s.violate("I5", "%s: etcd accepted a report of agent term %d, which lost its election", rg.name, m.act.Fence)
	}
	s.stats.ReportWrites++
	s.net.send(step, msg{kind: mPutAnswer, region: m.region, agent: m.agent, act: m.act})
	for _, c := range s.coords {
		if c.alive {
			s.net.send(step, msg{kind: mReportEvent, region: m.region, coord: c.id, report: rep, modRev: modRev})
		}
	}
}

func (rg *region) agent(id int) *agentProc {
	for _, a := range rg.agents {
		if a.id == id {
			return a
		}
	}
	return nil
}

// reconciled notices when the agent has reconciled a primary that lost
// writes: it resumed selling on it under a seller epoch.
func (s *Sim) reconciled(rg *region) {
	if l := rg.ledger; rg.lost && l.Epoch > 0 && !l.Stopped() {
		rg.lost = false
		s.tracef("%s: the new primary is reconciled (epoch %d)", rg.name, l.Epoch)
	}
}

// prune forgets processes that stopped.
func (s *Sim) prune() {
	s.coords = slices.DeleteFunc(s.coords, func(c *coordinator) bool { return !c.alive })
	for _, rg := range s.regions {
		rg.agents = slices.DeleteFunc(rg.agents, func(a *agentProc) bool { return !a.alive })
	}
}

func (s *Sim) crashPoint(name string, p float64) bool {
	if s.heal || s.rng.Float64() >= p {
		return false
	}
	s.stats.CrashPoints++
	s.tracef("crash point %s", name)
	return true
}

// traceState writes one line of the state after the step: per region the
// etcd counters (granted g, released x) and the store's (ceiling c, sold s,
// reserved r, available a), and flags: L lost writes, H halted, C cut off.
func (s *Sim) traceState() {
	if s.cfg.Trace == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%4d %6dms  state", s.step, s.now)
	if c := s.leader(); c != nil {
		fmt.Fprintf(&b, " leader=c%d", c.id)
	} else {
		b.WriteString(" leader=none")
	}
	fmt.Fprintf(&b, " pool=%d", s.etcd.alloc.Unallocated())
	for _, rg := range s.regions {
		r, l := s.etcd.alloc.Regions[rg.name], rg.ledger
		fmt.Fprintf(&b, " | %s g=%d x=%d c=%d s=%d r=%d a=%d", rg.name, r.Granted, r.Released, l.Ceiling(), l.Sold, l.Reserved, l.Available())
		if r.Pending != nil {
			fmt.Fprintf(&b, " pending=%s:%d", r.Pending.ID, r.Pending.Units)
		}
		if rg.lost {
			b.WriteString(" L")
		}
		if l.Halted {
			b.WriteString(" H")
		}
		if s.net.cut[rg.name] {
			b.WriteString(" C")
		}
	}
	b.WriteByte('\n')
	io.WriteString(s.cfg.Trace, b.String())
}

func (s *Sim) tracef(format string, args ...any) {
	if s.cfg.Trace == nil {
		return
	}
	fmt.Fprintf(s.cfg.Trace, "%4d %6dms  "+format+"\n", append([]any{s.step, s.now}, args...)...)
}

// cloneLedger copies a ledger's data, as a replica holds it.
func cloneLedger(l *quota.Ledger) *quota.Ledger {
	c := *l
	c.Releases = make(map[string]int64, len(l.Releases))
	for k, v := range l.Releases {
		c.Releases[k] = v
	}
	c.Resv = make(map[string]*quota.Reservation, len(l.Resv))
	for k, v := range l.Resv {
		r := *v
		c.Resv[k] = &r
	}
	c.ByReq = make(map[string]string, len(l.ByReq))
	for k, v := range l.ByReq {
		c.ByReq[k] = v
	}
	c.Users = make(map[string]int64, len(l.Users))
	for k, v := range l.Users {
		c.Users[k] = v
	}
	return &c
}
