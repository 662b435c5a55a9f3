package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"flashsale/quota/layout"
	"flashsale/regional/orders"
	"flashsale/simulations/invariants"
	"flashsale/simulations/loadgen"
)

// Options bound a scenario run.
type Options struct {
	Total        int64         // the sale's stock
	Clients      int           // buyers, spread over the regions (at most 16)
	Pace         time.Duration // a buyer's pause between users in the steady phase
	Warmup       time.Duration // steady load before the fault
	FaultFor     time.Duration // how long the fault lasts before it is healed
	After        time.Duration // steady load after the heal
	Sellout      time.Duration // the longest the closing burst may take
	OpLimit      int           // operations recorded at most (the buyers stop there)
	CheckTimeout time.Duration // porcupine's budget
	ResultsDir   string        // where a failed history's visualization goes
	Log          io.Writer     // progress lines; nil: none
}

// ShortOptions is the `make test` budget: a few scenarios of ~20 s each.
func ShortOptions() Options {
	return Options{Total: 150, Clients: 8, Pace: 300 * time.Millisecond, Warmup: 2 * time.Second, FaultFor: 3 * time.Second,
		After: 3 * time.Second, Sellout: 8 * time.Second, OpLimit: 1500, CheckTimeout: 60 * time.Second, ResultsDir: "results"}
}

// FullOptions is `make chaos`: longer faults, more buyers.
func FullOptions() Options {
	return Options{Total: 300, Clients: 16, Pace: 400 * time.Millisecond, Warmup: 3 * time.Second, FaultFor: 6 * time.Second,
		After: 5 * time.Second, Sellout: 12 * time.Second, OpLimit: 3000, CheckTimeout: 120 * time.Second, ResultsDir: "results"}
}

// Status is a scenario's verdict.
type Status string

const (
	Pass   Status = "PASS"
	Fail   Status = "FAIL"
	NotRun Status = "NOT RUN"
	// Caught: a negative control whose fault the checks caught, as they
	// must. Missed: one they did not catch (a failure).
	Caught Status = "CAUGHT"
	Missed Status = "MISSED"
	// Measured: a scenario on an unsafe setting, reported as measured.
	Measured Status = "MEASURED"
)

// Row is one scenario's line of the table.
type Row struct {
	Scenario     string
	Status       Status
	Sold         int64 // confirmed units
	Held         int64 // sold + reserved at the end
	Oversold     int64
	AckLost      int64 // acknowledged reservations missing, or not in the state the buyer was told
	Stranded     int64 // units unsold after the closing burst
	Recover      time.Duration
	Recovered    bool
	Ops, Unknown int
	Linearizable porcupine.CheckResult
	CheckTook    time.Duration
	Polls        int
	Violations   []string
	HTML         string
	Note         string
	Took         time.Duration
}

// Failed says the row is a failure of the suite.
func (r Row) Failed() bool { return r.Status == Fail || r.Status == Missed }

const saleID = "chaos"

// Run runs one scenario on a fresh deployment under dir.
func Run(ctx context.Context, bin, dir string, sc Scenario, o Options) (row Row) {
	row = Row{Scenario: sc.Name}
	began := time.Now()
	defer func() { row.Took = time.Since(began) }()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "chaos %s: "+format+"\n", append([]any{sc.Name}, args...)...)
		}
	}
	fail := func(err error) Row {
		row.Status, row.Note = Fail, err.Error()
		if sc.Negative {
			row.Status = Missed
		}
		return row
	}
	dir = filepath.Join(dir, sc.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	topo := Topology{Regions: []string{"us", "eu"}}
	if sc.Setup != nil {
		sc.Setup(&topo)
	}
	c, err := Start(ctx, bin, dir, topo)
	if err != nil {
		return fail(fmt.Errorf("start: %w", err))
	}
	defer c.Close()
	if err := c.CreateSale(ctx, saleID, o.Total); err != nil {
		return fail(err)
	}
	logf("sale open; steady load for %v, then the fault", o.Warmup)

	rec := NewRecorder(o.OpLimit)
	var buyers []*buyer
	for i := range min(o.Clients, 16) {
		name := topo.Regions[i%len(topo.Regions)]
		b, err := newBuyer(i, name, c.regions[name].url, saleID, rec)
		if err != nil {
			return fail(err)
		}
		buyers = append(buyers, b)
	}
	poll := startPoller(c, saleID, 100*time.Millisecond)
	stopPoll := sync.OnceValues(func() (int, []string) {
		p, _, v := poll.Stop()
		return p, v
	})
	defer stopPoll()

	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, b := range buyers {
		wg.Go(func() { b.steady(loadCtx, o.Pace) })
	}
	healAt := int64(-1)
	var faultErr error
	if sleepCtx(ctx, o.Warmup) && sc.Fault != nil {
		var heal func(context.Context) error
		logf("fault: %s", sc.What)
		heal, faultErr = sc.Fault(ctx, c)
		if faultErr == nil && heal != nil && sleepCtx(ctx, o.FaultFor) {
			logf("heal")
			healAt = rec.Now()
			faultErr = heal(ctx)
		}
	}
	sleepCtx(ctx, o.After)
	stopLoad()
	wg.Wait()
	if faultErr != nil {
		return fail(fmt.Errorf("fault: %w", faultErr))
	}

	// The closing burst: new users buy until every unit is held, nothing
	// sells for 3 s, or the bound passes. What is left is stranded.
	logf("closing burst")
	burstCtx, stopBurst := context.WithTimeout(ctx, o.Sellout)
	for _, b := range buyers {
		wg.Go(func() { b.sellout(burstCtx) })
	}
	last, lastAt := int64(-1), time.Now()
	for burstCtx.Err() == nil && time.Since(lastAt) < 3*time.Second {
		held := c.held(ctx)
		if held >= o.Total {
			break
		}
		if held != last {
			last, lastAt = held, time.Now()
		}
		sleepCtx(burstCtx, 100*time.Millisecond)
	}
	stopBurst()
	wg.Wait()

	// Past the order consumer's ClaimMinIdle (30 s): a killed agent's
	// pending entries are claimed by its successor only then.
	c.drainOrders(ctx, 45*time.Second)
	polls, violations := stopPoll()
	row.Polls, row.Violations = polls, violations
	ops := rec.Ops()
	row.Ops = len(ops)
	// Kept with the run's logs (chaos -keep): chaos -check-history checks
	// it again, with a longer budget.
	if b, err := json.Marshal(ops); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644)
	}
	final, err := c.verify(ctx, o.Total)
	if err != nil {
		return fail(fmt.Errorf("final check: %w", err))
	}
	row.Sold, row.Held, row.Violations = final.Sold, final.Held, append(row.Violations, final.Violations...)
	row.Oversold = max(0, final.Held-o.Total)
	row.Stranded = max(0, o.Total-final.Held)
	lost, sqlMissing, err := c.ackLost(ctx, ops)
	if err != nil {
		return fail(fmt.Errorf("acknowledged reservations: %w", err))
	}
	row.AckLost = lost
	if sqlMissing > 0 {
		row.Violations = append(row.Violations, fmt.Sprintf("I4: %d acknowledged reservations have no SQL order row after the stream drained", sqlMissing))
	}
	if healAt >= 0 && sc.Region != "" {
		row.Recover, row.Recovered = recovery(ops, sc.Region, healAt)
	}
	html := filepath.Join(o.ResultsDir, sc.Name+"-history.html")
	hc, err := CheckHistory(ops, o.Total, 1, o.CheckTimeout, html)
	if err != nil {
		return fail(err)
	}
	row.Linearizable, row.CheckTook, row.Unknown, row.HTML = hc.Result, hc.Took, hc.Unknown, hc.HTML
	logf("history of %d ops (%d unknown): %s in %v", hc.Ops, hc.Unknown, hc.Result, hc.Took.Round(time.Millisecond))

	broken := len(row.Violations) > 0 || row.Oversold > 0 || row.AckLost > 0 || hc.Result == porcupine.Illegal
	switch {
	case sc.Negative && broken:
		row.Status = Caught
	case sc.Negative:
		row.Status = Missed
	case sc.Unsafe:
		row.Status = Measured
	case broken:
		row.Status = Fail
	case hc.Result != porcupine.Ok:
		row.Status, row.Note = Fail, "the history check did not finish within its budget"
	default:
		row.Status = Pass
	}
	return row
}

// recovery is the time from heal to the first reservation in region
// asked for after it.
func recovery(ops []Op, region string, healAt int64) (time.Duration, bool) {
	best := int64(-1)
	for _, op := range ops {
		if op.Kind == Buy && op.Result == Reserved && op.Region == region && op.Call >= healAt {
			if best < 0 || op.Return < best {
				best = op.Return
			}
		}
	}
	if best < 0 {
		return 0, false
	}
	return time.Duration(best - healAt), true
}

// held sums sold + reserved over the regions' ledgers.
func (c *Cluster) held(ctx context.Context) int64 {
	var n int64
	for _, r := range c.regions {
		v, _ := r.rdb.HMGet(ctx, layout.SaleKey(saleID, "ledger"), "sold", "reserved").Result()
		for _, e := range v {
			if s, ok := e.(string); ok {
				var x int64
				fmt.Sscan(s, &x)
				n += x
			}
		}
	}
	return n
}

// drainOrders waits until every region's order stream is in SQL (the
// consumer group has nothing pending), at most within.
func (c *Cluster) drainOrders(ctx context.Context, within time.Duration) {
	_ = waitFor(ctx, within, "the order streams to drain", func() bool {
		for _, r := range c.regions {
			n, err := orders.Lag(ctx, r.rdb, layout.SaleKey(saleID, "orders"), "orders-sql")
			if err != nil || n > 0 {
				return false
			}
		}
		return true
	})
}

// verify is the closing check: the invariant checker once more, and the
// load generator's verifier over every Redis and SQL store.
func (c *Cluster) verify(ctx context.Context, total int64) (loadgen.Verdict, error) {
	var regions []invariants.Region
	var rr []loadgen.RegionRedis
	var stores []loadgen.OrderStore
	for _, name := range c.topo.Regions {
		r := c.regions[name]
		regions = append(regions, invariants.Region{Name: name, Redis: r.rdb})
		rr = append(rr, loadgen.RegionRedis{Region: name, Client: r.rdb})
		stores = append(stores, loadgen.OrderStore{Region: name, Store: r.orders})
	}
	var extra []string
	if err := invariants.Check(ctx, c.cli, layout.DefaultPrefix, regions); err != nil {
		v, other := splitViolations(err)
		if other && len(v) == 0 {
			return loadgen.Verdict{}, err
		}
		extra = v
	}
	verdict, err := loadgen.VerifyWith(ctx, rr, saleID, total, 1, loadgen.VerifyOptions{Orders: stores})
	verdict.Violations = append(extra, verdict.Violations...)
	return verdict, err
}

// ackLost counts the reservations buyers were told they hold that their
// region's Redis no longer has, or has in another state than the last
// definite confirm or cancel answer said; and those with no SQL row.
func (c *Cluster) ackLost(ctx context.Context, ops []Op) (lost, sqlMissing int64, err error) {
	type ack struct {
		region, want string
	}
	acks := map[string]*ack{}
	for _, op := range ops {
		switch {
		case op.Kind == Buy && op.Result == Reserved:
			if acks[op.Resv] == nil {
				acks[op.Resv] = &ack{region: op.Region}
			}
		case op.Result == OK && acks[op.Resv] != nil:
			acks[op.Resv].want = map[Kind]string{Confirm: "confirmed", Cancel: "cancelled"}[op.Kind]
		}
	}
	rows := map[string]map[string]bool{}
	for _, name := range c.topo.Regions {
		list, err := c.regions[name].orders.Orders(ctx, saleID, name)
		if err != nil {
			return 0, 0, err
		}
		rows[name] = map[string]bool{}
		for _, o := range list {
			rows[name][o.Resv] = true
		}
	}
	var errs []error
	for id, a := range acks {
		state, err := c.regions[a.region].rdb.HGet(ctx, layout.ResvKey(saleID, id), "state").Result()
		switch {
		case errors.Is(err, redis.Nil):
			lost++
		case err != nil:
			errs = append(errs, err)
		case a.want != "" && state != a.want:
			lost++
		}
		if !rows[a.region][id] {
			sqlMissing++
		}
	}
	return lost, sqlMissing, errors.Join(errs...)
}
