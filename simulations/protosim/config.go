package protosim

import (
	"fmt"
	"io"
	"slices"
)

// Bug names a deliberate protocol mistake, switched on in the real code the
// simulation runs (agent.CoreBugs, quota.LedgerBugs, quota.RoundBugs:
// test-only switches) or in the fakes around it, so a run can show the
// checks catch it: a negative control.
type Bug string

const (
	// BugNone runs the protocol as designed.
	BugNone Bug = ""
	// BugNoMaxMerge makes the agent apply grant watch events as they come
	// (adding the increment the event announces, as a non-idempotent HINCRBY
	// would) instead of max-merging the cumulative granted counter, so a
	// duplicated or replayed event raises the ceiling twice. A plain
	// overwrite with the cumulative value would be harmless here, because
	// granted_r never decreases: it can only lower the ceiling for a while.
	BugNoMaxMerge Bug = "no-max-merge"
	// BugGrantBeforeAck makes the leader count a release as done and grant
	// its units to the target as soon as it writes the release request,
	// before the region acknowledges that its Redis gave them up.
	BugGrantBeforeAck Bug = "grant-before-ack"
	// BugNoFence makes the fake etcd skip the leader-revision compare, so a
	// deposed leader's writes land.
	BugNoFence Bug = "no-fence"
	// BugDrySoldOut makes a region whose own quota ran dry tell its buyers
	// "sold out" whatever the rest of the sale holds (the seller's policy
	// before DESIGN L1), so buyers leave while stock remains elsewhere.
	BugDrySoldOut Bug = "dry-sold-out"
	// BugNoReconcile makes the agent resume selling after its store lost
	// writes without raising the floors to what etcd and the order store know.
	BugNoReconcile Bug = "no-reconcile"
	// BugReserveIgnoresHalted makes the reserve script sell while the region
	// is halted or on a primary the agent has not reconciled.
	BugReserveIgnoresHalted Bug = "reserve-ignores-halted"
	// BugGrantSkipsFence makes apply_grant accept an older agent's fence.
	BugGrantSkipsFence Bug = "grant-skips-fence"
	// BugReleaseAnswersBefore makes the release script answer the
	// released_local it found instead of the one it made, so the agent
	// acknowledges less than its Redis gave up.
	BugReleaseAnswersBefore Bug = "release-acks-before-script"
	// BugConfirmExpired makes confirm turn an expired reservation, whose
	// unit went back to stock, into a sale.
	BugConfirmExpired Bug = "confirm-expired"
	// BugAckNoReportRevision makes the leader write an ack without
	// comparing the mod revision of the report it came from.
	BugAckNoReportRevision Bug = "ack-without-report-revision"
	// BugRestoreSkipsFence makes the order store's restore (restore.lua and
	// recount.lua in orders.Restore) write under a deposed agent's fence.
	BugRestoreSkipsFence Bug = "restore-skips-fence"
)

// Bugs lists every negative control.
var Bugs = []Bug{BugNoMaxMerge, BugGrantBeforeAck, BugNoFence, BugNoReconcile, BugDrySoldOut,
	BugReserveIgnoresHalted, BugGrantSkipsFence, BugReleaseAnswersBefore, BugConfirmExpired, BugAckNoReportRevision,
	BugRestoreSkipsFence}

// ParseBug returns the named bug, or an error listing the known names.
func ParseBug(name string) (Bug, error) {
	if name == "" {
		return BugNone, nil
	}
	if b := Bug(name); slices.Contains(Bugs, b) {
		return b, nil
	}
	return BugNone, fmt.Errorf("unknown bug %q (known: %v)", name, Bugs)
}

// Config is one simulated sale. DefaultConfig gives the tuned values; a run
// is fully determined by its Config.
type Config struct {
	Seed       uint64
	Regions    int   // number of regions, 1..len(regionNames)
	Total      int64 // units on sale
	MainSteps  int   // steps with faults and shifting demand
	HealSteps  int   // then steps with the network healed, no faults, demand everywhere
	StepMillis int64 // simulated time per step
	TTLMillis  int64 // reservation time to live
	// Burst runs the opening burst instead of the fault schedule: no
	// faults, and from the first step far more buyers than stock, 90% of
	// them in one region and the rest spread over the others; nobody pays
	// or cancels. Liveness is then checked: at least 99% of the stock sold.
	Burst bool
	Bug   Bug
	Trace io.Writer // when set, every step's events are written here
}

// DefaultConfig returns a cheap but busy sale: 200 units over 3 regions,
// 300 faulty steps then 200 healed ones.
func DefaultConfig() Config {
	return Config{
		Seed:       1,
		Regions:    3,
		Total:      200,
		MainSteps:  300,
		HealSteps:  200,
		StepMillis: 10,
		TTLMillis:  200,
	}
}

// BurstConfig is DefaultConfig's sale sold by the opening burst: no fault
// phase, 4 s of buyers, 90% of them in one region, far above the stock,
// and reservations that outlast the run (nobody pays, nothing expires).
func BurstConfig() Config {
	c := DefaultConfig()
	c.Burst, c.MainSteps, c.HealSteps, c.TTLMillis = true, 0, 400, 1_000_000
	return c
}

// DefaultSeeds is how many seeds the command runs unless told otherwise;
// every negative control must be caught within it.
const DefaultSeeds = 1000

var regionNames = []string{"ap", "eu", "us", "sa", "af", "me", "oc", "ca"}

func (c Config) validate() error {
	switch {
	case c.Regions < 1 || c.Regions > len(regionNames):
		return fmt.Errorf("regions %d: want 1..%d", c.Regions, len(regionNames))
	case c.Total < 1:
		return fmt.Errorf("total %d: want at least 1", c.Total)
	case c.MainSteps < 0 || c.HealSteps < 1:
		return fmt.Errorf("steps main=%d heal=%d: want main >= 0, heal >= 1", c.MainSteps, c.HealSteps)
	case c.StepMillis < 1 || c.TTLMillis < 1:
		return fmt.Errorf("step %d ms, ttl %d ms: want both >= 1", c.StepMillis, c.TTLMillis)
	}
	_, err := ParseBug(string(c.Bug))
	return err
}

// Violation is the first invariant a run broke.
type Violation struct {
	Step   int
	Kind   string // I1, I1-held, I1-region, I2, I2-sum, I2-monotone, I2-ack, I4, I5, lost-sale, lost-release, reservation-id, liveness, L1-sold-out, accounting
	Detail string
}

func (v *Violation) String() string {
	return fmt.Sprintf("step %d: %s: %s", v.Step, v.Kind, v.Detail)
}

// Stats counts what happened in a run.
type Stats struct {
	Sold     int64 // units held by buyers at the end (confirmed or reserved)
	Stranded int64 // units not sold by the end of the healed phase, although demand was there
	// Refused counts buyers whose region was dry, by answer: quota_pending,
	// all_reserved, sold_out.
	QuotaPending, AllReserved, SoldOutAnswers int64
	// CutOffPeak is the most unsold units held by cut-off regions at once:
	// stock nobody else could sell until they came back (DESIGN §4).
	CutOffPeak int64

	AllocWrites  int64 // successful leader writes of the allocation
	ReportWrites int64 // successful agent report writes
	Grants       int64
	Moves        int64 // release requests written
	Acks         int64 // release acknowledgements applied
	// AckReportMoved counts acks refused because the report they came from
	// was overwritten in etcd meanwhile.
	AckReportMoved int64

	LeaderChanges  int64
	LeaderCrashes  int64
	FencedWrites   int64 // deposed leaders' writes refused by the fence
	AgentCrashes   int64
	AgentTerms     int64 // agent terms started (each bumps the Redis fence)
	StaleRefused   int64 // stale agents' Redis writes refused by the ledger fence
	FencedReports  int64 // stale agents' reports refused by etcd
	Partitions     int64
	Failovers      int64 // stores that lost their last writes
	LostDetected   int64 // reconciliations that found counters below etcd or the order store
	Reconciles     int64
	LostResv       int64 // reservations a failover erased from the store (the order store keeps them)
	CrashPoints    int64 // crashes injected inside a transfer
	Messages       int64
	Dropped        int64
	Duplicated     int64
	ReserveCalls   int64
	Reservations   int64
	Confirms       int64
	CancelsExpires int64
	LateConfirms   int64 // confirms tried after the reservation expired (all must fail)
	StaleEpochs    int64 // reserves refused for a stale seller epoch
	HaltedAnswers  int64 // reserves refused while halted or on an unreconciled primary
	HaltedFinishes int64 // confirms and cancels refused likewise (the buyer tries again later)
	Rewatches      int64 // agent watch streams broken and resumed from an older revision
	Compacted      int64 // agent re-reads because the history a watch needed was compacted
	Pauses         int64 // agent processes paused past their lease before a Redis write
	ExpiredReports int64 // report keys deleted because no agent held the region's lease
}

// Add sums o into s.
func (s *Stats) Add(o Stats) {
	s.Sold += o.Sold
	s.Stranded += o.Stranded
	s.QuotaPending += o.QuotaPending
	s.AllReserved += o.AllReserved
	s.SoldOutAnswers += o.SoldOutAnswers
	s.CutOffPeak = max(s.CutOffPeak, o.CutOffPeak) // a peak, not a sum
	s.AllocWrites += o.AllocWrites
	s.ReportWrites += o.ReportWrites
	s.Grants += o.Grants
	s.Moves += o.Moves
	s.Acks += o.Acks
	s.AckReportMoved += o.AckReportMoved
	s.LeaderChanges += o.LeaderChanges
	s.LeaderCrashes += o.LeaderCrashes
	s.FencedWrites += o.FencedWrites
	s.AgentCrashes += o.AgentCrashes
	s.AgentTerms += o.AgentTerms
	s.StaleRefused += o.StaleRefused
	s.FencedReports += o.FencedReports
	s.Partitions += o.Partitions
	s.Failovers += o.Failovers
	s.LostDetected += o.LostDetected
	s.Reconciles += o.Reconciles
	s.LostResv += o.LostResv
	s.CrashPoints += o.CrashPoints
	s.Messages += o.Messages
	s.Dropped += o.Dropped
	s.Duplicated += o.Duplicated
	s.ReserveCalls += o.ReserveCalls
	s.Reservations += o.Reservations
	s.Confirms += o.Confirms
	s.CancelsExpires += o.CancelsExpires
	s.LateConfirms += o.LateConfirms
	s.StaleEpochs += o.StaleEpochs
	s.HaltedAnswers += o.HaltedAnswers
	s.HaltedFinishes += o.HaltedFinishes
	s.Rewatches += o.Rewatches
	s.Compacted += o.Compacted
	s.Pauses += o.Pauses
	s.ExpiredReports += o.ExpiredReports
}

// Result is the outcome of one seed.
type Result struct {
	Seed      uint64
	Stats     Stats
	Violation *Violation // nil when every check held
}
