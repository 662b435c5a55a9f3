package quota_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/cockroachdb/datadriven"

	"flashsale/quota"
)

// TestData replays the scenarios under testdata/scenarios/ (rapid keeps
// its failure files in testdata/rapid/). Regenerate expectations
// with `go test ./quota -run TestData -rewrite` and review the diff.
func TestData(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		e := &env{}
		datadriven.RunTest(t, path, e.run)
	})
}

// env is one scenario: the coordinator's allocation, one ledger (the
// model of the region's Redis) per region, and the last plan made.
type env struct {
	a       *quota.Allocation
	ledgers map[string]*quota.Ledger
	ran     map[string]string // region -> id of the last release its ledger ran
	plan    quota.Plan
	pol     quota.Policy
	now     int64
}

func (e *env) run(t *testing.T, d *datadriven.TestData) string {
	if d.Cmd != "new" && e.a == nil {
		d.Fatalf(t, "%s before new", d.Cmd)
	}
	switch d.Cmd {
	case "new":
		var total int64
		var regions string
		d.ScanArgs(t, "total", &total)
		d.ScanArgs(t, "regions", &regions)
		names := strings.Split(regions, ",")
		e.a = quota.NewAllocation("s", total, names...)
		e.ledgers, e.ran = map[string]*quota.Ledger{}, map[string]string{}
		for _, n := range names {
			e.ledgers[n] = quota.NewLedger()
		}
		e.pol, e.plan, e.now = quota.DefaultPolicy(), quota.Plan{}, 0
		return "ok"
	case "region":
		r := e.region(t, d, "r")
		d.MaybeScanArgs(t, "weight", &r.Weight)
		d.MaybeScanArgs(t, "min", &r.Min)
		d.MaybeScanArgs(t, "max", &r.Max)
		return fmt.Sprintf("weight=%d min=%d max=%d", r.Weight, r.Min, r.Max)
	case "policy":
		p := &e.pol
		d.MaybeScanArgs(t, "split", &p.SplitPercent)
		d.MaybeScanArgs(t, "horizon", &p.HorizonMs)
		d.MaybeScanArgs(t, "stale", &p.StaleAfterMs)
		d.MaybeScanArgs(t, "keep", &p.MinKeep)
		pol := *p
		e.a.Policy = &pol // what Tick uses
		return fmt.Sprintf("%+v", pol)
	case "grant":
		var n int64
		d.ScanArgs(t, "n", &n)
		return result(e.a.Grant(e.name(t, d, "r"), n))
	case "release":
		var k int64
		var to string
		d.ScanArgs(t, "k", &k)
		d.MaybeScanArgs(t, "to", &to)
		req, err := e.a.RequestRelease(e.name(t, d, "r"), k, to)
		if err != nil {
			return "error: " + err.Error()
		}
		return fmtActions(quota.Actions{Releases: []quota.ReleaseRequest{req}})
	case "ack":
		var id string
		var rl int64
		d.ScanArgs(t, "id", &id)
		d.ScanArgs(t, "released", &rl)
		return e.step(quota.ReleaseAcked{Region: e.name(t, d, "r"), ID: id, ReleasedLocal: rl})
	case "report":
		var rep quota.Report
		var id string
		d.MaybeScanArgs(t, "sold", &rep.Sold)
		d.MaybeScanArgs(t, "reserved", &rep.Reserved)
		d.MaybeScanArgs(t, "released", &rep.ReleasedLocal)
		d.MaybeScanArgs(t, "granted", &rep.GrantedSeen)
		d.MaybeScanArgs(t, "demand", &rep.Demand)
		d.ScanArgs(t, "at", &rep.At)
		d.MaybeScanArgs(t, "release", &id)
		return e.step(quota.RegionReported{Region: e.name(t, d, "r"), Report: rep, ReleaseID: id})
	case "tick":
		d.ScanArgs(t, "now", &e.now)
		return e.step(quota.Tick{Now: e.now})
	case "plan":
		return e.planCmd(t, d)
	case "apply":
		acts, err := e.a.Apply(e.plan)
		if err != nil {
			return "error: " + err.Error()
		}
		return fmtActions(acts)
	case "check":
		return e.check()
	case "show":
		d.MaybeScanArgs(t, "now", &e.now)
		return e.show()
	case "ledger":
		return e.ledgerCmd(t, d)
	}
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return ""
}

func (e *env) planCmd(t *testing.T, d *datadriven.TestData) string {
	if len(d.CmdArgs) == 0 {
		d.Fatalf(t, "plan needs a kind")
	}
	d.MaybeScanArgs(t, "now", &e.now)
	var p quota.Plan
	var err error
	switch kind := d.CmdArgs[0].Key; kind {
	case "split":
		p, err = e.a.InitialSplit(e.pol, e.now)
	case "rebalance":
		p, err = e.a.Rebalance(e.pol, e.now)
	case "sweep":
		p, err = e.a.EndSweep(e.pol, e.now)
	case "decide":
		// plan decide now=.. starts=.. [ends=..] [lead=..] [sweep=..]
		// [lag=..] [learning] [paused] [ended] [dead=r1,r2]: the loop's decision.
		sit := quota.Situation{Now: e.now, Learning: d.HasArg("learning"), Paused: d.HasArg("paused"), Ended: d.HasArg("ended")}
		d.ScanArgs(t, "starts", &sit.StartsAt)
		d.MaybeScanArgs(t, "ends", &sit.EndsAt)
		d.MaybeScanArgs(t, "lead", &sit.Timing.SplitLeadMs)
		d.MaybeScanArgs(t, "sweep", &sit.Timing.SweepBeforeMs)
		d.MaybeScanArgs(t, "lag", &sit.Timing.DemandLagMs)
		if d.HasArg("dead") {
			var dead string
			d.ScanArgs(t, "dead", &dead)
			sit.Live = map[string]bool{}
			for _, n := range e.a.RegionNames() {
				sit.Live[n] = !slices.Contains(strings.Split(dead, ","), n)
			}
		}
		var note string
		p, note, err = e.a.Decide(sit)
		if err == nil && note != "" {
			e.plan = p
			return note + "\n" + fmtPlan(p)
		}
	case "drain":
		p, err = e.a.Drain(e.name(t, d, "r"), d.HasArg("spread"))
	case "move":
		var n int64
		d.ScanArgs(t, "n", &n)
		p, err = e.a.Move(e.name(t, d, "from"), e.name(t, d, "to"), n)
	default:
		d.Fatalf(t, "unknown plan %s", kind)
	}
	if err != nil {
		return "error: " + err.Error()
	}
	e.plan = p
	return fmtPlan(p)
}

func (e *env) ledgerCmd(t *testing.T, d *datadriven.TestData) string {
	r := e.name(t, d, "r")
	l := e.ledgers[r]
	if l == nil {
		l = quota.NewLedger() // an unknown region: the allocation answers the error
	}
	if len(d.CmdArgs) < 2 {
		d.Fatalf(t, "ledger r=<region> <op>")
	}
	fence := int64(1)
	d.MaybeScanArgs(t, "fence", &fence)
	switch op := d.CmdArgs[1].Key; op {
	case "grant":
		granted := e.a.Regions[r].Granted // what the agent reads from etcd
		d.MaybeScanArgs(t, "granted", &granted)
		seen, err := l.ApplyGrant(fence, granted)
		return fmt.Sprintf("granted_seen=%d%s", seen, errSuffix(err))
	case "release":
		var id string
		var k, keep int64
		if p := e.a.Regions[r].Pending; p != nil {
			id, k, keep = p.ID, p.Units, p.Keep
		}
		d.MaybeScanArgs(t, "id", &id)
		d.MaybeScanArgs(t, "k", &k)
		d.MaybeScanArgs(t, "keep", &keep)
		m, rl, err := l.Release(fence, 0, id, k, keep)
		if err == nil {
			e.ran[r] = id
		}
		return fmt.Sprintf("released %d released_local=%d%s", m, rl, errSuffix(err))
	case "reserve":
		var user, req string
		now, ttl, limit := e.now, int64(60000), int64(1)
		d.ScanArgs(t, "user", &user)
		d.ScanArgs(t, "req", &req)
		d.MaybeScanArgs(t, "now", &now)
		d.MaybeScanArgs(t, "ttl", &ttl)
		d.MaybeScanArgs(t, "limit", &limit)
		// Ids are the caller's; the scenarios number a region's
		// reservations 1, 2, … unless they name one.
		id := strconv.Itoa(len(l.Resv) + 1)
		d.MaybeScanArgs(t, "id", &id)
		res, out, err := l.Reserve(0, id, user, req, now, ttl, limit)
		if err != nil {
			return result(err)
		}
		if out != quota.Reserved && out != quota.Duplicate {
			return out.String()
		}
		return fmt.Sprintf("%s id=%s expires=%d", out, res.ID, res.ExpiresAt)
	case "confirm", "cancel":
		var id string
		d.ScanArgs(t, "id", &id)
		if op == "confirm" {
			return result(l.Confirm(id))
		}
		return result(l.Cancel(id))
	case "expire":
		limit := 100
		d.ScanArgs(t, "now", &e.now)
		d.MaybeScanArgs(t, "limit", &limit)
		return fmt.Sprintf("expired %v", l.Expire(e.now, limit))
	case "report":
		rep := quota.Report{Sold: l.Sold, Reserved: l.Reserved, ReleasedLocal: l.ReleasedLocal, GrantedSeen: l.GrantedSeen}
		d.ScanArgs(t, "at", &rep.At)
		d.MaybeScanArgs(t, "demand", &rep.Demand)
		return e.step(quota.RegionReported{Region: r, Report: rep, ReleaseID: e.ran[r]})
	case "show":
		return fmtLedger(l)
	default:
		d.Fatalf(t, "unknown ledger op %s", op)
	}
	return ""
}

func (e *env) step(ev quota.Event) string {
	acts, err := e.a.Step(ev)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmtActions(acts)
}

// check is the invariants every scenario can assert at any point: the
// allocation's own (I2 in etcd), each ledger's ceiling within its region's
// net grant (I2 across), and no oversell over all ledgers (I1).
func (e *env) check() string {
	var bad []string
	if err := e.a.Check(); err != nil {
		bad = append(bad, err.Error())
	}
	var used int64
	for _, n := range e.a.RegionNames() {
		l := e.ledgers[n]
		if c, net := l.Ceiling(), e.a.Regions[n].Net(); c > net {
			bad = append(bad, fmt.Sprintf("I2: %s ceiling %d above net grant %d", n, c, net))
		}
		used += l.Sold + l.Reserved
	}
	if used > e.a.Total {
		bad = append(bad, fmt.Sprintf("I1: sold+reserved %d above total %d", used, e.a.Total))
	}
	if len(bad) == 0 {
		return "ok"
	}
	return strings.Join(bad, "\n")
}

func (e *env) show() string {
	st := e.a.Status(e.now, e.pol)
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintln(w, "region\tweight\tmin\tmax\tgranted\treleased\tnet\tsold\treserved\tavail\tdemand\tage\tfresh\tpending")
	for _, r := range st.Regions {
		pending := "-"
		if r.Pending != nil {
			pending = fmtRelease(*r.Pending)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%g\t%d\t%t\t%s\n", r.Region, r.Weight, r.Min, r.Max,
			r.Granted, r.Released, r.Net, r.Sold, r.Reserved, r.Available, r.Demand, r.AgeMs, r.Fresh, pending)
	}
	_ = w.Flush()
	fmt.Fprintf(&b, "total=%d net=%d unallocated=%d sold=%d reserved=%d available=%d",
		st.Total, st.SumNet, st.Unallocated, st.Sold, st.Reserved, st.Available)
	return b.String()
}

func (e *env) name(t *testing.T, d *datadriven.TestData, key string) string {
	var s string
	d.ScanArgs(t, key, &s)
	return s
}

func (e *env) region(t *testing.T, d *datadriven.TestData, key string) *quota.RegionAlloc {
	n := e.name(t, d, key)
	r := e.a.Regions[n]
	if r == nil {
		d.Fatalf(t, "unknown region %s", n)
	}
	return r
}

func fmtPlan(p quota.Plan) string {
	if p.Empty() {
		return "empty plan"
	}
	return fmtActions(quota.Actions(p))
}

func fmtActions(a quota.Actions) string {
	var lines []string
	for _, g := range a.Grants {
		lines = append(lines, fmt.Sprintf("grant %s %d", g.Region, g.Units))
	}
	for _, r := range a.Releases {
		lines = append(lines, "release "+fmtRelease(r))
	}
	if len(lines) == 0 {
		return "no actions"
	}
	return strings.Join(lines, "\n")
}

func fmtRelease(r quota.ReleaseRequest) string {
	to := "pool"
	switch {
	case r.To != "":
		to = r.To
	case r.Spread:
		to = "spread"
	}
	id := ""
	if r.ID != "" {
		id = r.ID + " "
	}
	keep := ""
	if r.Keep > 0 {
		keep = fmt.Sprintf(" keep %d", r.Keep)
	}
	return fmt.Sprintf("%s%s %d -> %s%s", id, r.Region, r.Units, to, keep)
}

func fmtLedger(l *quota.Ledger) string {
	return fmt.Sprintf("fence=%d granted_seen=%d released_local=%d ceiling=%d sold=%d reserved=%d available=%d halted=%t",
		l.Fence, l.GrantedSeen, l.ReleasedLocal, l.Ceiling(), l.Sold, l.Reserved, l.Available(), l.Halted)
}

func result(err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

func errSuffix(err error) string {
	if err != nil {
		return " error: " + err.Error()
	}
	return ""
}
