package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"flashsale/quota"
	"flashsale/quota/layout"
	"flashsale/regional/redisstore"
)

// Core is one term of the region agent as a pure state machine, in the
// style of etcd's raft: it does no I/O, starts no goroutine and reads no
// clock. Its driver tells it what happened (Step: an etcd read or watch
// event, a tick, the answer to an action) and carries out what Ready asks
// (Redis script calls, etcd transactions), feeding every answer back with
// Step. The real driver (term.go) does that against etcd and Redis; the
// protocol simulation (simulations/protosim) against its fakes, so the
// simulation checks this code, not a copy.
//
// Per sale, the core runs passes: read the counters, reconcile Redis with
// what etcd (and the order store) know if it lost writes or changed
// primary, apply the grant, run a pending release, copy the sale view,
// write the report. One action per sale is outstanding at a time, so a
// pass is a sequence; sales are independent of each other.
type Core struct {
	cfg     CoreConfig
	sales   map[string]*saleState
	nextID  int64
	now     time.Time
	deposed error
	out     []Action // emitted by Step, handed out by Ready
}

// CoreConfig is what a term's core needs to know.
type CoreConfig struct {
	Region string
	// Fence is the term's fence: its election key's create revision.
	Fence int64
	// ReportRefresh: see Config.ReportRefresh.
	ReportRefresh time.Duration
	// Bugs are negative controls for the protocol simulation only.
	Bugs CoreBugs
	// Logger; nil discards.
	Logger *slog.Logger
}

// CoreBugs switch off one defence of the agent each, so that the
// simulation can show its checker catches the mistake. Never set outside
// simulations/protosim.
type CoreBugs struct {
	// NoMaxMerge applies grants as increments over what this term last
	// applied, as a non-idempotent HINCRBY would, instead of the
	// cumulative granted_r: a new term adds the whole grant again.
	NoMaxMerge bool
	// NoReconcile resumes a Redis that lost writes without raising its
	// counters to what etcd and the order store know.
	NoReconcile bool
}

// ActionKind names what an Action asks of the driver.
type ActionKind int

const (
	// ReadCounters: Redis counters of the sale and the primary answering
	// (redisstore.Store.Counters). Answer: Result.Counters.
	ReadCounters ActionKind = iota
	// SetHalted: set_halted.lua with Halted. Lost says it is halted because
	// Redis lost writes (the driver logs and counts it).
	SetHalted
	// RestoreOrders: ask the order store (Witness.Restore) to bring Redis's
	// reservations up to what it knows. Answer: Result.SoldFloor.
	RestoreOrders
	// RaiseFloor: raise_floor.lua with ReleasedLocal and Sold.
	RaiseFloor
	// ApplyGrant: apply_grant.lua with Granted. Answer: Result.GrantedSeen.
	ApplyGrant
	// Release: release.lua with Release (id, units, keep) under Epoch.
	// Answer: Result.M and Result.ReleasedLocal.
	Release
	// Resume: resume.lua with Epoch, Primary (the primary the pass read
	// first) and Granted: the region sells again. Answer: Result.GrantedSeen.
	Resume
	// SetView: set_view.lua with View.
	SetView
	// PutReport: an etcd Txn putting Report on the term's lease, if the
	// election key's create revision is still the fence.
	PutReport
	// DeleteReport: an etcd Txn deleting the sale's report, same compare.
	DeleteReport
)

var kindNames = []string{"read-counters", "set-halted", "restore-orders", "raise-floor", "apply-grant", "release", "resume", "set-view", "put-report", "delete-report"}

func (k ActionKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("action(%d)", int(k))
}

// Etcd says whether the action is an etcd transaction (else Redis or the
// order store).
func (k ActionKind) Etcd() bool { return k == PutReport || k == DeleteReport }

// Action is one call the driver must make. Every Redis script call carries
// Fence; every etcd write compares the election key's create revision with
// Fence.
type Action struct {
	ID    int64
	Kind  ActionKind
	Sale  string
	Fence int64

	Halted, Lost        bool
	Granted             int64
	Release             quota.ReleaseRequest
	Epoch               int64
	ReleasedLocal, Sold int64
	View                redisstore.SaleView
	Primary             string
	Report              *layout.RegionReport
}

// Input is what Step is told.
type Input interface{ isInput() }

// Loaded is a read of everything at etcd revision Rev: the term's first
// read, and a re-read after a broken watch. What is missing from it is gone.
type Loaded struct {
	Rev     int64
	Now     time.Time
	Allocs  map[string]*quota.Allocation
	Sales   map[string]*layout.SaleSpec
	Reports []layout.RegionReport
}

// Watch events carry the revision of their change (etcd's ModRevision, or
// the deletion's revision). One watch stream keeps etcd's order, but a
// re-watch may repeat older events, and the allocation, sale and report
// streams are not ordered among themselves: an event no newer than what the
// core holds for its key is ignored.

// AllocChanged is a watch event on a sale's allocation (nil: deleted).
type AllocChanged struct {
	Sale   string
	Alloc  *quota.Allocation
	ModRev int64
}

// SaleChanged is a watch event on a sale's spec (nil: deleted).
type SaleChanged struct {
	Sale   string
	Spec   *layout.SaleSpec
	ModRev int64
}

// ReportChanged is a watch event on a region's report (nil: deleted).
type ReportChanged struct {
	Region, Sale string
	Report       *layout.RegionReport
	ModRev       int64
}

// Tick is the passing of time: every sale gets a pass. Demand is each
// sale's reserve attempts per second, as the sellers counted them.
type Tick struct {
	Now    time.Time
	Demand map[string]float64
}

// Result is the answer to action ID. Err is any failure; for an etcd
// write, Deposed says its compare failed.
type Result struct {
	ID      int64
	Err     error
	Deposed bool

	Counters      redisstore.Counters
	GrantedSeen   int64
	M             int64
	ReleasedLocal int64
	SoldFloor     int64
}

func (Loaded) isInput()        {}
func (AllocChanged) isInput()  {}
func (SaleChanged) isInput()   {}
func (ReportChanged) isInput() {}
func (Tick) isInput()          {}
func (Result) isInput()        {}

// NewCore returns the core of a term.
func NewCore(cfg CoreConfig) *Core {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Core{cfg: cfg, sales: map[string]*saleState{}}
}

// Fence is the term's fence.
func (c *Core) Fence() int64 { return c.cfg.Fence }

// Deposed is non-nil once the term learned it lost its election (a newer
// fence in Redis, a failed etcd compare); it then asks for nothing more.
func (c *Core) Deposed() error { return c.deposed }

// Ready hands out the actions decided since the last call, at most one
// outstanding per sale. Each is answered once with a Result.
func (c *Core) Ready() []Action {
	out := c.out
	c.out = nil
	return out
}

// pass stages, in order. A pass moves through them; a stage that has
// nothing to do is skipped.
type stage int

const (
	stIdle stage = iota
	stRead
	stHalt
	stHaltReport
	stRestore
	stRaise
	stVerify
	stEpochReport
	stResume
	stGrant
	stRelease
	stView
	stReport
	stDrop
)

var stageNames = []string{"idle", "read", "halt", "halt-report", "restore", "raise", "verify",
	"epoch-report", "resume", "grant", "release", "view", "report", "drop"}

func (s stage) String() string { return stageNames[s] }

// saleState is what the term knows about one sale.
type saleState struct {
	name  string
	spec  *layout.SaleSpec
	alloc *quota.Allocation
	// floor holds the highest sold, released_local and granted_seen etcd
	// has heard from this region: reports (this term's, a predecessor's)
	// and the allocation's durable Released and Report. Redis below it
	// lost writes. Its Epoch is the highest seller epoch etcd recorded.
	floor quota.Report
	// reported: a report key for this sale may exist in etcd.
	reported  bool
	last      *layout.RegionReport // the last report this term wrote
	lastWrite time.Time
	ackID     string // the release id this term acknowledges in its reports
	// etcdAck is the release named by the newest report of this region
	// in etcd (ownRev its mod revision): that release ran already, and the
	// report's released_local counts it, whatever Redis remembers now.
	etcdAck   string
	ownRev    int64
	lastErr   string
	lastAvail int64
	demand    float64
	others    map[string]quota.Report
	// The revisions of what the core holds: older events are ignored.
	allocRev, specRev int64
	othersRev         map[string]int64
	view              redisstore.SaleView
	applied           int64 // CoreBugs.NoMaxMerge: the grant this term last applied

	// The pass under way.
	stage       stage
	waiting     int64 // the outstanding action's id; 0: none
	again       bool  // something changed during the pass: run another
	c           redisstore.Counters
	force       bool // the report must be written
	lost        bool // this pass found lost writes
	witness     int64
	epoch       int64                // the epoch the pass reconciles to
	primary     string               // the primary the pass reconciles
	putting     *layout.RegionReport // the report being written
	releasing   string               // the release being run
	pendingView redisstore.SaleView  // the view being written
}

func (s *saleState) region(name string) *quota.RegionAlloc {
	if s.alloc == nil {
		return nil
	}
	return s.alloc.Regions[name]
}

func raiseFloor(f *quota.Report, r quota.Report) {
	f.Epoch = max(f.Epoch, r.Epoch)
	f.Sold = max(f.Sold, r.Sold)
	f.ReleasedLocal = max(f.ReleasedLocal, r.ReleasedLocal)
	f.GrantedSeen = max(f.GrantedSeen, r.GrantedSeen)
}

// lostWrites reports whether Redis holds less than etcd heard from it. Sold,
// released_local and granted_seen only grow in Redis, so any of them below
// a report means Redis forgot acknowledged writes.
func lostWrites(c redisstore.Counters, f quota.Report) bool {
	return c.Sold < f.Sold || c.ReleasedLocal < f.ReleasedLocal || c.GrantedSeen < f.GrantedSeen
}

func (c *Core) sale(name string) *saleState {
	s, ok := c.sales[name]
	if !ok {
		s = &saleState{name: name}
		c.sales[name] = s
	}
	return s
}

func (c *Core) names() []string {
	names := make([]string, 0, len(c.sales))
	for n := range c.sales {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Step applies one input. It returns errDeposed (wrapped) once the term
// is over; every other failure is the sale's, retried on the next tick.
func (c *Core) Step(in Input) error {
	if c.deposed != nil {
		return c.deposed
	}
	switch e := in.(type) {
	case Loaded:
		c.now = e.Now
		c.load(e)
	case AllocChanged:
		if s := c.sale(e.Sale); e.ModRev > s.allocRev {
			s.allocRev = e.ModRev
			c.putAlloc(e.Sale, e.Alloc)
			c.kick(e.Sale)
		}
	case SaleChanged:
		if s := c.sale(e.Sale); e.ModRev > s.specRev {
			s.specRev, s.spec = e.ModRev, e.Spec
			c.kick(e.Sale)
		}
	case ReportChanged:
		if c.putReport(e.Region, e.Sale, e.Report, e.ModRev) {
			c.kick(e.Sale)
		}
	case Tick:
		c.now = e.Now
		for name, d := range e.Demand {
			if s, ok := c.sales[name]; ok {
				s.demand = d
			}
		}
		for _, n := range c.names() {
			c.kick(n)
		}
	case Result:
		c.result(e)
	default:
		return fmt.Errorf("region agent core: unknown input %T", in)
	}
	return c.deposed
}

func (c *Core) load(e Loaded) {
	for _, s := range c.sales {
		s.alloc, s.spec, s.others = nil, nil, nil // what is not read again is gone
		s.allocRev, s.specRev, s.othersRev = e.Rev, e.Rev, nil
	}
	for name, a := range e.Allocs {
		c.putAlloc(name, a)
		c.sale(name).allocRev = e.Rev
	}
	for name, spec := range e.Sales {
		s := c.sale(name)
		s.spec, s.specRev = spec, e.Rev
	}
	for i := range e.Reports {
		r := &e.Reports[i]
		c.putReport(r.Region, r.Sale, r, e.Rev)
	}
	for _, n := range c.names() {
		c.kick(n)
	}
}

func (c *Core) putAlloc(sale string, a *quota.Allocation) {
	s := c.sale(sale)
	s.alloc = a
	if ra := s.region(c.cfg.Region); ra != nil {
		// Released is durable and only grows on an ack of ours, so Redis
		// holds at least that much released_local.
		raiseFloor(&s.floor, quota.Report{ReleasedLocal: ra.Released})
		if ra.Report != nil {
			raiseFloor(&s.floor, *ra.Report)
		}
	}
}

// putReport records a report event at modRev; it says whether the sale
// needs a pass.
func (c *Core) putReport(region, sale string, rep *layout.RegionReport, modRev int64) bool {
	s := c.sale(sale)
	if region != c.cfg.Region {
		if modRev <= s.othersRev[region] {
			return false
		}
		if s.othersRev == nil {
			s.othersRev = map[string]int64{}
		}
		s.othersRev[region] = modRev
		if rep == nil {
			delete(s.others, region)
		} else {
			if s.others == nil {
				s.others = map[string]quota.Report{}
			}
			s.others[region] = rep.Report
		}
		return true
	}
	if rep == nil {
		return false
	}
	// Our own region's report, ours or a predecessor's: a floor.
	s.reported = true
	raiseFloor(&s.floor, rep.Report)
	if modRev > s.ownRev {
		s.etcdAck, s.ownRev = rep.ReleaseID, modRev
	}
	return false
}

// kick asks for a pass over sale: now if none runs, else once it ends.
func (c *Core) kick(sale string) {
	s := c.sale(sale)
	if s.stage != stIdle {
		s.again = true
		return
	}
	c.startPass(s)
}

func (c *Core) startPass(s *saleState) {
	s.again, s.force, s.lost, s.witness, s.epoch = false, false, false, 0, 0
	if s.region(c.cfg.Region) == nil {
		switch {
		case s.reported:
			s.stage = stDrop
			c.emit(s, Action{Kind: DeleteReport})
		case s.alloc == nil && s.spec == nil:
			delete(c.sales, s.name)
		}
		return
	}
	s.stage = stRead
	c.emit(s, Action{Kind: ReadCounters})
}

func (c *Core) emit(s *saleState, a Action) {
	c.nextID++
	a.ID, a.Sale, a.Fence = c.nextID, s.name, c.cfg.Fence
	s.waiting = a.ID
	c.out = append(c.out, a)
}

// endPass ends the pass; err (nil: it completed) is logged once per
// distinct message. A pass asked for meanwhile starts now.
func (c *Core) endPass(s *saleState, err error) {
	s.stage, s.waiting = stIdle, 0
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			c.cfg.Logger.Warn("reconcile sale; retrying every tick", "sale", s.name, "err", err)
		}
	} else if s.lastErr != "" {
		s.lastErr = ""
		c.cfg.Logger.Info("reconcile sale: working again", "sale", s.name)
	}
	if s.again && c.deposed == nil {
		c.startPass(s)
	}
}

func (c *Core) depose(err error) {
	if c.deposed == nil {
		c.deposed = fmt.Errorf("%w: %w", errDeposed, err)
	}
	c.out = nil
}

func (c *Core) result(r Result) {
	var s *saleState
	for _, x := range c.sales {
		if x.waiting == r.ID && r.ID != 0 {
			s = x
			break
		}
	}
	if s == nil {
		return // not asked, or asked of a pass that is over
	}
	s.waiting = 0
	if r.Deposed {
		c.depose(fmt.Errorf("sale %s: etcd compare on the election key failed at %s", s.name, s.stage))
		return
	}
	if errors.Is(r.Err, quota.ErrStaleFence) {
		c.depose(fmt.Errorf("sale %s: redis holds a newer fence: %w", s.name, r.Err))
		return
	}
	if r.Err != nil && s.putting != nil && (s.stage == stReport || s.stage == stHaltReport || s.stage == stEpochReport) {
		// A put whose answer was lost (a timeout) may still land: etcd may
		// hold it and a leader ack from it, so the floor holds it too. Its
		// counters came from Redis, which only grows them, so the floor is
		// never above what Redis had. (Found by the simulation: a report
		// carrying a release landed after the agent gave up on it, Redis
		// then failed over, and the reconcile missed the release.)
		raiseFloor(&s.floor, s.putting.Report)
	}
	if r.Err != nil && s.stage != stHaltReport {
		c.endPass(s, fmt.Errorf("sale %s at %s: %w", s.name, s.stage, r.Err))
		return
	}
	c.advance(s, r)
}

// advance takes the answer to the pass's current stage and moves on.
func (c *Core) advance(s *saleState, r Result) {
	region := c.cfg.Region
	ra := s.region(region)
	if ra == nil && s.stage != stDrop {
		s.again = true // the sale left meanwhile: the next pass drops it
		c.endPass(s, nil)
		return
	}
	switch s.stage {
	case stRead:
		s.c = r.Counters
		if s.c.Fence > c.cfg.Fence {
			c.depose(fmt.Errorf("sale %s: redis holds fence %d above ours %d", s.name, s.c.Fence, c.cfg.Fence))
			return
		}
		// Reconcile when Redis lost writes, is halted (a reconciliation
		// a crash interrupted), is a primary not reconciled yet, or holds
		// an epoch below the one etcd recorded (or none: never reconciled).
		if lostWrites(s.c, s.floor) || s.c.Stopped() || s.c.Epoch < s.floor.Epoch || s.c.Epoch == 0 {
			s.lost = lostWrites(s.c, s.floor)
			c.cfg.Logger.Warn("reconciling the region's redis with etcd", "sale", s.name, "lostWrites", s.lost,
				"halted", s.c.Halted, "stopped", s.c.Stopped(), "redisEpoch", s.c.Epoch, "etcdEpoch", s.floor.Epoch,
				"redisSold", s.c.Sold, "etcdSold", s.floor.Sold, "redisReleasedLocal", s.c.ReleasedLocal, "etcdReleasedLocal", s.floor.ReleasedLocal)
			s.force, s.primary = true, s.c.Primary
			if !s.c.Halted {
				s.stage = stHalt
				c.emit(s, Action{Kind: SetHalted, Halted: true, Lost: s.lost})
				return
			}
			c.restore(s)
			return
		}
		c.normal(s)
	case stHalt:
		s.c.Halted = true
		if s.lost {
			// Tell the coordinator at once; the report carries the floors,
			// never Redis's lower numbers, so a successor still finds them.
			c.putReport2(s, stHaltReport, c.report(s, s.c))
			return
		}
		c.restore(s)
	case stHaltReport:
		if r.Err == nil {
			c.wrote(s)
		}
		c.restore(s) // its failure is not fatal: the reconciliation goes on
	case stRestore:
		s.witness = r.SoldFloor
		if c.cfg.Bugs.NoReconcile {
			s.stage = stVerify
			c.emit(s, Action{Kind: ReadCounters})
			return
		}
		s.stage = stRaise
		c.emit(s, Action{Kind: RaiseFloor, ReleasedLocal: s.floor.ReleasedLocal, Sold: max(s.floor.Sold, s.witness)})
	case stRaise:
		s.stage = stVerify
		c.emit(s, Action{Kind: ReadCounters})
	case stVerify:
		s.c = r.Counters
		if (s.c.Sold < s.floor.Sold || s.c.ReleasedLocal < s.floor.ReleasedLocal) && !c.cfg.Bugs.NoReconcile {
			c.endPass(s, fmt.Errorf("sale %s: redis still below etcd after raising floors (sold %d released_local %d)",
				s.name, s.c.Sold, s.c.ReleasedLocal))
			return
		}
		// The new epoch is recorded in etcd before Redis has it, so it
		// never rolls back with writes Redis loses.
		s.epoch = max(s.c.Epoch, s.floor.Epoch) + 1
		rep := c.report(s, s.c)
		rep.Epoch = s.epoch
		c.putReport2(s, stEpochReport, rep)
	case stEpochReport:
		c.wrote(s)
		s.stage = stResume
		// The grant comes with the resume, in one script: a grant applied
		// before it could land on a primary that failed over meanwhile,
		// which would then sell it unreconciled.
		c.emit(s, Action{Kind: Resume, Epoch: s.epoch, Primary: s.primary, Granted: c.grantArg(s, ra)})
	case stResume:
		c.granted(s, ra, r)
		s.c.Halted, s.c.Epoch, s.c.EpochPrimary = false, s.epoch, s.primary
		c.cfg.Logger.Warn("redis reconciled with etcd; region selling again", "sale", s.name, "epoch", s.epoch,
			"sold", s.c.Sold, "releasedLocal", s.c.ReleasedLocal, "grantedSeen", s.c.GrantedSeen)
		c.normal(s)
	case stGrant:
		c.granted(s, ra, r)
		c.release(s, ra)
	case stRelease:
		p := ra.Pending
		s.ackID = s.releasing
		s.c.ReleasedLocal = max(s.c.ReleasedLocal, r.ReleasedLocal)
		s.force = true
		c.cfg.Logger.Info("released units", "sale", s.name, "release", s.ackID, "released", r.M, "releasedLocal", r.ReleasedLocal, "pending", p != nil)
		c.view(s)
	case stView:
		s.view = s.pendingView
		c.report2(s)
	case stReport:
		c.wrote(s)
		c.endPass(s, nil)
	case stDrop:
		s.reported, s.last = false, nil
		c.endPass(s, nil)
		if s.alloc == nil && s.spec == nil && s.stage == stIdle {
			delete(c.sales, s.name)
		}
	}
}

func (c *Core) restore(s *saleState) {
	s.stage = stRestore
	c.emit(s, Action{Kind: RestoreOrders})
}

// grantArg is what apply_grant is given: the cumulative granted_r, which
// Redis max-merges, so a stale or repeated event never raises the ceiling
// wrongly.
func (c *Core) grantArg(s *saleState, ra *quota.RegionAlloc) int64 {
	if c.cfg.Bugs.NoMaxMerge {
		return s.c.GrantedSeen + ra.Granted - s.applied
	}
	return ra.Granted
}

func (c *Core) granted(s *saleState, ra *quota.RegionAlloc, r Result) {
	s.c.GrantedSeen, s.c.Fence = r.GrantedSeen, c.cfg.Fence
	s.applied = ra.Granted
}

// normal is the pass once Redis is reconciled: the grant, then a pending
// release, the view and the report.
func (c *Core) normal(s *saleState) {
	ra := s.region(c.cfg.Region)
	if s.c.Fence < c.cfg.Fence || s.c.GrantedSeen < ra.Granted {
		// Also run when nothing is new: it claims the fence, so the
		// deposed predecessor's writes are refused from now on (I5).
		s.stage = stGrant
		c.emit(s, Action{Kind: ApplyGrant, Granted: c.grantArg(s, ra)})
		return
	}
	c.release(s, ra)
}

func (c *Core) release(s *saleState, ra *quota.RegionAlloc) {
	p := ra.Pending
	switch {
	case p == nil || p.ID == s.ackID:
	case p.ID == s.etcdAck:
		// It ran already (maybe in a Redis that lost its record since):
		// the report etcd holds counts it, and the floor covers that.
		// Running it again would give up more units than asked, stranded
		// until the next release. Acknowledge it.
		s.ackID, s.force = p.ID, true
	default:
		// Idempotent per id: a repeat (this term's retry, or a successor
		// of an agent killed before its ack) returns the recorded m.
		s.stage = stRelease
		s.releasing = p.ID
		c.emit(s, Action{Kind: Release, Release: *p, Epoch: s.c.Epoch})
		return
	}
	c.view(s)
}

// view copies what etcd says of the rest of the sale into the region's
// Redis, where sellers read it with their counters: the other regions'
// sold and reserved, from their live reports or, for a region without one
// (its agent is away), the last report the allocation kept. Written when
// it changed, and at least every ReportRefresh so its age tells sellers it
// is current.
func (c *Core) view(s *saleState) {
	v := redisstore.SaleView{Total: s.alloc.Total}
	for name, ra := range s.alloc.Regions {
		if name == c.cfg.Region {
			continue
		}
		rep, ok := s.others[name]
		if stored := ra.Report; stored != nil && (!ok || stored.Sold > rep.Sold) {
			rep.Sold = max(rep.Sold, stored.Sold)
			if !ok {
				rep.Reserved = stored.Reserved
			}
		}
		v.OthersSold += rep.Sold
		v.OthersReserved += rep.Reserved
	}
	same := v.Total == s.view.Total && v.OthersSold == s.view.OthersSold && v.OthersReserved == s.view.OthersReserved
	if same && c.now.Sub(time.UnixMilli(s.view.At)) < c.cfg.ReportRefresh {
		c.report2(s)
		return
	}
	v.At = c.now.UnixMilli()
	s.pendingView = v
	s.stage = stView
	c.emit(s, Action{Kind: SetView, View: v})
}

// report2 writes the sale's report if it is due, and ends the pass.
func (c *Core) report2(s *saleState) {
	rep := c.report(s, s.c)
	if s.force || c.reportDue(s, rep, s.c.Available()) {
		s.lastAvail = s.c.Available()
		c.putReport2(s, stReport, rep)
		return
	}
	c.endPass(s, nil)
}

func (c *Core) putReport2(s *saleState, st stage, rep *layout.RegionReport) {
	s.stage, s.putting = st, rep
	c.emit(s, Action{Kind: PutReport, Report: rep})
}

// wrote records the report etcd accepted.
func (c *Core) wrote(s *saleState) {
	r := s.putting
	s.last, s.lastWrite, s.reported = r, c.now, true
	raiseFloor(&s.floor, r.Report)
}

// report builds the sale's report from counters c. Its counters never go
// below the floor: while Redis is being reconciled they say what etcd
// already knew. Its epoch is the one Redis holds, or the floor's.
func (c *Core) report(s *saleState, cn redisstore.Counters) *layout.RegionReport {
	r := quota.Report{
		Sold:          cn.Sold,
		Reserved:      cn.Reserved,
		ReleasedLocal: cn.ReleasedLocal,
		GrantedSeen:   cn.GrantedSeen,
		Demand:        s.demand,
		At:            c.now.UnixMilli(),
	}
	r.Epoch = cn.Epoch
	raiseFloor(&r, s.floor)
	return &layout.RegionReport{Report: r, Region: c.cfg.Region, Sale: s.name, ReleaseID: s.ackID, Fence: c.cfg.Fence, Halted: cn.Halted}
}

// reportDue says whether the sale's report is worth an etcd write now.
// Reports are coalesced, one per ReportRefresh, because every report is an
// etcd write and they are most of a sale's (DESIGN §4: writes follow quota
// movement, not purchases). What cannot wait: a changed fence, epoch, ack,
// halt or released_local; demand that jumped (at least doubled, by 10/s
// or more), so the planners never take a region whose buyers just came
// for idle; and the region's need: it turned low (or dry again), so the
// coordinator hears it at once and pulls quota for it.
func (c *Core) reportDue(s *saleState, rep *layout.RegionReport, avail int64) bool {
	old := s.last
	switch {
	case old == nil, c.now.Sub(s.lastWrite) >= c.cfg.ReportRefresh,
		old.ReleaseID != rep.ReleaseID, old.Fence != rep.Fence, old.Halted != rep.Halted, old.Epoch != rep.Epoch,
		old.ReleasedLocal != rep.ReleasedLocal,
		rep.Demand >= 2*old.Demand+10: // buyers came: the planners must not take this region for idle
		return true
	}
	p, total := s.alloc.PolicyOf(), s.alloc.Total
	if !p.Low(avail, rep.Demand, total) {
		return false
	}
	return !p.Low(s.lastAvail, old.Demand, total) || (avail == 0 && s.lastAvail > 0) || rep.Demand > 2*old.Demand+1
}
