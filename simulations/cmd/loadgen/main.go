// Command loadgen drives running regional sellers (e.g. `flashsale dev`)
// with a flash-sale crowd, prints the figures by outcome and then checks
// the regions' Redis (and SQL order stores, with -orders) for oversell,
// users above the limit and, with -expect-sellout, units left unsold. It
// only talks to loopback addresses and local files.
//
//	loadgen -endpoints eu=http://127.0.0.1:8081,us=http://127.0.0.1:8082 \
//	  -redis eu=127.0.0.1:6379,us=127.0.0.1:6380 -sale demo -total 100 \
//	  -orders eu=sqlite:///tmp/dev/orders-eu.db,us=sqlite:///tmp/dev/orders-us.db \
//	  -rate 2000 -duration 20s -expect-sellout
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/regional/orders"
	"flashsale/simulations/loadgen"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type options struct {
	endpoints, redisAddrs, ordersDSNs, regions, sale, secret, jsonOut, timeline, plots string
	users, first, workers, maxRequests, retries                                        int
	rate, misroute, confirm, cancel                                                    float64
	duration, timeout, warmup, bucket, retryFor                                        time.Duration
	total, limit                                                                       int64
	seed                                                                               uint64
	progress, noVerify, verifyOnly, expectSellout                                      bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.endpoints, "endpoints", "", "region=base URL of each seller, comma-separated (loopback only), e.g. eu=http://127.0.0.1:8081")
	fs.StringVar(&o.redisAddrs, "redis", "", "region=host:port of each region's Redis, for the after-run check (loopback only)")
	fs.StringVar(&o.ordersDSNs, "orders", "", "region=DSN of each region's SQL order store, for the after-run check: sqlite:///abs/path.db, file:path or postgres://... (local files and loopback only; needs -redis)")
	fs.StringVar(&o.regions, "regions", "", "users' home regions with weights, e.g. eu=5,us=3,ap=2 (default: the endpoints' regions, equal)")
	fs.StringVar(&o.sale, "sale", "", "sale id (itemId) to buy; required")
	fs.StringVar(&o.secret, "secret", "", "HS256 secret for shopper tokens (default env FLASHSALE_JWT_SECRET or FLASHSALE_JWT_HS256_SECRET; none: no token, for an insecure-dev seller)")
	fs.IntVar(&o.users, "users", 1_000_000, "distinct users; each buys at most once")
	fs.IntVar(&o.first, "first", 0, "start this far into the users' visiting order (a second run with the same -seed and -first set to the first run's next_visit meets only new users)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: Poisson arrivals per second (0: closed loop with -workers)")
	fs.IntVar(&o.workers, "workers", 64, "closed-loop workers, or the open-loop cap on attempts in flight")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "run length (at most 1h)")
	fs.DurationVar(&o.warmup, "warmup", 0, "start of the run left out of the figures")
	fs.IntVar(&o.maxRequests, "max-requests", 100_000, "attempts at most (at most 10,000,000)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "timeout of one try")
	fs.IntVar(&o.retries, "retries", 20, "extra tries of an attempt that timed out or was refused with a retry hint (quota_pending, all_reserved, ...), with the same requestId; a refusal is retried after its retryAfterMs, else its Retry-After")
	fs.DurationVar(&o.retryFor, "retry-for", 30*time.Second, "most time an attempt spends retrying: a wait that would end later is not taken (0: no bound but -retries)")
	fs.Float64Var(&o.misroute, "misroute", 0.05, "fraction of attempts sent to a region other than the user's home (expects a 307)")
	fs.Float64Var(&o.confirm, "confirm", 0.5, "fraction of reservations confirmed")
	fs.Float64Var(&o.cancel, "cancel", 0.2, "fraction of reservations cancelled (the rest expire)")
	fs.Int64Var(&o.total, "total", -1, "the sale's total, for the oversell check (required with -redis)")
	fs.Int64Var(&o.limit, "limit", 1, "the sale's per-user limit, for the check")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of users' regions, visiting order and arrivals")
	fs.BoolVar(&o.progress, "progress", false, "show progress on stderr")
	fs.BoolVar(&o.expectSellout, "expect-sellout", false, "demand exceeds stock in this run: sold + reserved must equal -total exactly, as the seed's load test asks")
	fs.BoolVar(&o.noVerify, "no-verify", false, "skip the after-run Redis check")
	fs.BoolVar(&o.verifyOnly, "verify-only", false, "send no load: only check -redis for the sale (e.g. after a k6 run)")
	fs.StringVar(&o.jsonOut, "json", "", "write the report and verdict as JSON to this file")
	fs.StringVar(&o.timeline, "timeline", "", "write latency and stock over time as CSV to this file (stock needs -redis)")
	fs.StringVar(&o.plots, "plots", "", "write latency.png, stock.png and quota.png into this directory after the run (needs -redis)")
	fs.DurationVar(&o.bucket, "bucket", 100*time.Millisecond, "width of a -timeline row and of a -plots point")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o.run(ctx, stdout, stderr)
}

func parsePairs(flagName, s string) (map[string]string, []string, error) {
	m := map[string]string{}
	var order []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" || v == "" {
			return nil, nil, fmt.Errorf("-%s %q: want region=value pairs", flagName, s)
		}
		if _, dup := m[k]; dup {
			return nil, nil, fmt.Errorf("-%s: region %s twice", flagName, k)
		}
		m[k] = v
		order = append(order, k)
	}
	return m, order, nil
}

func (o options) run(ctx context.Context, stdout, stderr io.Writer) error {
	switch {
	case o.sale == "":
		return errors.New("-sale is required")
	case o.duration <= 0 || o.duration > time.Hour:
		return fmt.Errorf("-duration %v: want (0, 1h]", o.duration)
	case o.maxRequests < 1 || o.maxRequests > 10_000_000:
		return fmt.Errorf("-max-requests %d: want 1..10,000,000", o.maxRequests)
	case o.workers < 1 || o.workers > 100_000:
		return fmt.Errorf("-workers %d: want 1..100,000", o.workers)
	case o.bucket <= 0:
		return fmt.Errorf("-bucket %v: want > 0", o.bucket)
	case o.verifyOnly && (o.noVerify || o.redisAddrs == ""):
		return errors.New("-verify-only needs -redis (and -total), without -no-verify")
	case o.plots != "" && (o.verifyOnly || o.noVerify || o.redisAddrs == ""):
		return errors.New("-plots needs -redis (stock and quota are read from the regions' ledgers), without -no-verify or -verify-only")
	case (o.ordersDSNs != "" || o.expectSellout) && (o.noVerify || o.redisAddrs == ""):
		return errors.New("-orders and -expect-sellout need -redis (they are checked with the regions' ledgers), without -no-verify")
	}
	check, closeCheck, err := o.checkClients()
	if err != nil {
		return err
	}
	defer closeCheck()
	stores, closeStores, err := o.orderStores(ctx)
	if err != nil {
		return err
	}
	defer closeStores()
	vopts := loadgen.VerifyOptions{ExpectSellout: o.expectSellout, Orders: stores}
	if o.verifyOnly {
		return verify(stdout, check, o.sale, o.total, o.limit, vopts, o.jsonOut, nil)
	}
	endpoints, epOrder, err := parsePairs("endpoints", o.endpoints)
	if err != nil {
		return err
	}
	if len(endpoints) == 0 {
		return errors.New("-endpoints is required, e.g. eu=http://127.0.0.1:8081")
	}
	regionSpec := o.regions
	if regionSpec == "" {
		regionSpec = strings.Join(epOrder, ",")
	}
	regions, err := loadgen.ParseRegions(regionSpec)
	if err != nil {
		return fmt.Errorf("-regions: %w", err)
	}
	for _, r := range regions {
		if _, ok := endpoints[r.Name]; !ok {
			return fmt.Errorf("-regions: region %s has users but no entry in -endpoints", r.Name)
		}
	}
	pop, err := loadgen.NewPopulation(o.users, regions, o.seed)
	if err != nil {
		return fmt.Errorf("-users: %w", err)
	}
	secret := o.secret
	if secret == "" {
		secret = os.Getenv("FLASHSALE_JWT_SECRET")
	}
	if secret == "" {
		secret = os.Getenv("FLASHSALE_JWT_HS256_SECRET")
	}
	var signer *loadgen.Signer
	if secret != "" {
		if signer, err = loadgen.NewSigner([]byte(secret), time.Hour); err != nil {
			return fmt.Errorf("-secret: %w", err)
		}
	} else {
		fmt.Fprintln(stderr, "loadgen: no token secret: sending no tokens (only an insecure-dev seller accepts that)")
	}
	op, err := loadgen.NewHTTPOp(loadgen.HTTPConfig{
		Endpoints: endpoints, Sale: o.sale, Signer: signer, Timeout: o.timeout, Retries: o.retries, RetryFor: o.retryFor,
		MisrouteFrac: o.misroute, ConfirmFrac: o.confirm, CancelFrac: o.cancel,
	})
	if err != nil {
		return err
	}
	defer op.Close()

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	plan := loadgen.Plan{Rate: o.rate, Workers: o.workers, Duration: o.duration, MaxRequests: o.maxRequests, Warmup: o.warmup, Seed: o.seed, FirstVisit: o.first}
	var progress loadgen.Progress
	if o.progress {
		var done atomic.Int64
		progress = func(n int) { done.Store(int64(n)) }
		stopBar := startBar(stderr, &done, min(o.maxRequests, o.users), o.duration)
		defer stopBar()
	}
	var sampler *loadgen.StockSampler
	if (o.timeline != "" || o.plots != "") && len(check) > 0 {
		sampler = loadgen.StartStockSampler(ctx, check, o.sale, o.bucket/2)
	}
	rep, err := loadgen.Run(ctx, plan, pop, op, progress)
	stock := sampler.Stop()
	if err != nil {
		return err
	}
	printReport(stdout, rep)
	vopts.SoldOutAnswers = rep.Answers[loadgen.OutcomeSoldOut]
	buckets := loadgen.Timeline(rep.Samples, o.bucket, stock)
	if o.timeline != "" {
		if err := writeTimeline(o.timeline, buckets); err != nil {
			return err
		}
	}
	if o.plots != "" {
		if err := loadgen.WritePlots(o.plots, buckets, stock); err != nil {
			return fmt.Errorf("-plots: %w", err)
		}
		fmt.Fprintf(stdout, "plots: latency.png, stock.png, quota.png in %s\n", o.plots)
	}

	if len(check) == 0 {
		fmt.Fprintln(stdout, "verify: skipped (give -redis and -total to check for oversell)")
	}
	return verify(stdout, check, o.sale, o.total, o.limit, vopts, o.jsonOut, rep)
}

// checkClients opens a client per region's Redis for the check (none
// without -redis or with -no-verify).
func (o options) checkClients() ([]loadgen.RegionRedis, func(), error) {
	var check []loadgen.RegionRedis
	closeAll := func() {
		for _, c := range check {
			_ = c.Client.Close()
		}
	}
	if o.noVerify || o.redisAddrs == "" {
		return nil, closeAll, nil
	}
	addrs, order, err := parsePairs("redis", o.redisAddrs)
	if err != nil {
		return nil, closeAll, err
	}
	if o.total < 0 {
		return nil, closeAll, errors.New("-total is required with -redis (the sale's total, to check for oversell)")
	}
	for _, r := range order {
		host, _, err := net.SplitHostPort(addrs[r])
		if err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("-redis %s=%s: %w", r, addrs[r], err)
		}
		if !loopback(host) {
			closeAll()
			return nil, func() {}, fmt.Errorf("-redis %s=%s: only loopback addresses", r, addrs[r])
		}
		check = append(check, loadgen.RegionRedis{Region: r, Client: redis.NewClient(&redis.Options{Addr: addrs[r]})})
	}
	return check, closeAll, nil
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// orderStores opens each region's order store given with -orders (none
// without it). Opening applies the store's migrations, so a SQLite file
// must already exist: a mistyped path would otherwise be created empty
// and pass every check.
func (o options) orderStores(ctx context.Context) ([]loadgen.OrderStore, func(), error) {
	var stores []loadgen.OrderStore
	closeAll := func() {
		for _, s := range stores {
			_ = s.Store.Close()
		}
	}
	if o.noVerify || o.ordersDSNs == "" {
		return nil, closeAll, nil
	}
	dsns, order, err := parsePairs("orders", o.ordersDSNs)
	if err != nil {
		return nil, closeAll, err
	}
	for _, r := range order {
		if err := localDSN(dsns[r]); err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("-orders %s: %w", r, err)
		}
		s, err := orders.Open(ctx, dsns[r])
		if err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("-orders %s: %w", r, err)
		}
		stores = append(stores, loadgen.OrderStore{Region: r, Store: s})
	}
	return stores, closeAll, nil
}

// localDSN accepts an existing SQLite file or a PostgreSQL on loopback.
func localDSN(dsn string) error {
	switch {
	case strings.HasPrefix(dsn, "sqlite://"), strings.HasPrefix(dsn, "file:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "file:")
		path, _, _ = strings.Cut(path, "?")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("order store file: %w", err)
		}
		return nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return fmt.Errorf("order store DSN: %w", err)
		}
		// A host in the query (libpq style) overrides the URL's.
		for _, h := range append([]string{u.Hostname()}, u.Query()["host"]...) {
			if !loopback(h) && !strings.HasPrefix(h, "/") {
				return fmt.Errorf("order store host %q: only loopback addresses or a local socket", h)
			}
		}
		return nil
	}
	return fmt.Errorf("order store DSN %q: want sqlite:///abs/path.db, file:path or postgres://", dsn)
}

// verify checks the regions' Redis (if any), prints the verdict, writes
// the JSON, and fails on a violation.
func verify(w io.Writer, check []loadgen.RegionRedis, sale string, total, limit int64, opts loadgen.VerifyOptions, jsonOut string, rep *loadgen.Report) error {
	out := struct {
		Report  *loadgen.Report  `json:"report,omitempty"`
		Verdict *loadgen.Verdict `json:"verdict,omitempty"`
	}{Report: rep}
	var verr error
	if len(check) > 0 {
		v, err := loadgen.VerifyWith(context.Background(), check, sale, total, limit, opts)
		if err != nil {
			return err
		}
		out.Verdict = &v
		printVerdict(w, v)
		if !v.OK() {
			verr = fmt.Errorf("invariants violated: %s", strings.Join(v.Violations, "; "))
		}
	}
	if jsonOut != "" {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			return fmt.Errorf("-json: %w", err)
		}
	}
	return verr
}

func writeTimeline(path string, bs []loadgen.Bucket) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-timeline: %w", err)
	}
	if err := loadgen.WriteTimelineCSV(f, bs); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("-timeline: %w", err)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

func printReport(w io.Writer, rep *loadgen.Report) {
	fmt.Fprintf(w, "%s loop, %d workers", rep.Mode, rep.Workers)
	if rep.Mode == "open" {
		fmt.Fprintf(w, ", target %.0f req/s, %d dropped over the in-flight cap", rep.Rate, rep.Dropped)
	}
	fmt.Fprintf(w, "\nattempts %d in %v: %.0f req/s; reserved %d; next -first %d", rep.Attempts, rep.Window.Round(time.Millisecond), rep.Throughput, rep.Reserved, rep.NextVisit)
	if rep.SoldOutAfter > 0 {
		fmt.Fprintf(w, "; sold out after %v", rep.SoldOutAfter.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	if len(rep.SoldOutAfterByRegion) > 0 {
		regions := make([]string, 0, len(rep.SoldOutAfterByRegion))
		for r := range rep.SoldOutAfterByRegion {
			regions = append(regions, r)
		}
		sort.Strings(regions)
		for i, r := range regions {
			regions[i] = fmt.Sprintf("%s %v", r, rep.SoldOutAfterByRegion[r].Round(time.Millisecond))
		}
		fmt.Fprintf(w, "sold out after (by users' home region): %s\n", strings.Join(regions, ", "))
	}
	if len(rep.Answers) > 0 {
		codes := make([]string, 0, len(rep.Answers))
		for c := range rep.Answers {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for i, c := range codes {
			codes[i] = fmt.Sprintf("%s %d", c, rep.Answers[c])
		}
		fmt.Fprintf(w, "answers (every try, retries included): %s\n", strings.Join(codes, ", "))
	}
	fmt.Fprintf(w, "retries per buyer: p50 %d, p99 %d, max %d\n", rep.RetriesP50, rep.RetriesP99, rep.RetriesMax)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "outcome\tcount\tp50\tp99\tp99.9\tmax")
	names := make([]string, 0, len(rep.ByOutcome))
	for k := range rep.ByOutcome {
		names = append(names, k)
	}
	sort.Strings(names)
	row := func(name string, l loadgen.Latency) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", name, l.Count, ms(l.P50), ms(l.P99), ms(l.P999), ms(l.Max))
	}
	row("(all attempts)", rep.All)
	for _, k := range names {
		row(k, rep.ByOutcome[k])
	}
	_ = tw.Flush()
	if len(rep.Errors) > 0 {
		fmt.Fprintln(w, "errors:")
		for msg, n := range rep.Errors {
			fmt.Fprintf(w, "  %d x %s\n", n, msg)
		}
	}
}

func printVerdict(w io.Writer, v loadgen.Verdict) {
	for _, r := range v.Regions {
		fmt.Fprintf(w, "region %s: ceiling %d, sold %d, reserved %d, stranded %d, users holding %d, order stream holds %d\n",
			r.Region, r.GrantedSeen-r.ReleasedLocal, r.Sold, r.Reserved, r.Stranded, r.Users, r.StreamHeld)
	}
	for _, o := range v.Orders {
		fmt.Fprintf(w, "orders %s (SQL): rows %d, live %d (reserved or confirmed), confirmed %d\n", o.Region, o.Rows, o.Live, o.Confirmed)
	}
	fmt.Fprintf(w, "units: held %d (sold + reserved), stranded %d (in a region's quota, unsold), ungranted %d (in no region's quota) of total %d\n",
		v.Held, v.Stranded, v.Ungranted, v.Total)
	if v.OK() {
		cmp := "<="
		if v.ExpectSellout {
			cmp = "==" // the check asked for a sellout, and got it
		}
		fmt.Fprintf(w, "verify: ok: sold %d + reserved %d %s total %d; max per user %d <= limit %d\n",
			v.Sold, v.Reserved, cmp, v.Total, v.MaxPerUser, v.Limit)
		return
	}
	fmt.Fprintln(w, "verify: FAILED")
	for _, s := range v.Violations {
		fmt.Fprintln(w, "  "+s)
	}
}
