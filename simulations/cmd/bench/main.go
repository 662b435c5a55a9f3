// Command bench runs the flash-sale baselines side by side in one run and
// prints one table and the key ratios (`make bench`, `make bench-quick`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"flashsale/simulations/bench"
	"flashsale/simulations/loadgen"
)

func main() {
	// A run starts each HTTP target by running this executable again.
	if served, err := bench.ServeTargetFromEnv(); served {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench target:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "short scenarios: the whole run in under a minute")
	dur := fs.Duration("duration", 0, "length of each scenario (default 1.6s quick, 10s full)")
	warm := fs.Duration("warmup", 0, "start of each scenario left out of its figures (default 0.3s quick, 2s full)")
	workers := fs.Int("workers", 0, "closed-loop concurrency (default 512: enough to saturate every row, the seller included)")
	rounds := fs.Int("rounds", 0, "interleaved slices per scenario (default 6 quick, 10 full)")
	rate := fs.Float64("rate", 0, "open-loop rate of the latency rows, req/s (default 300)")
	delays := fs.String("delays", "", "one-way delays to the global counter (default 20ms,80ms,217ms)")
	only := fs.String("only", "", "run just these rows, comma-separated (e.g. bare,buy_before_sellout; durability: the three durability_* rows)")
	skipPG := fs.Bool("skip-postgres", false, "leave out the PostgreSQL hot-row baseline")
	skipGoodput := fs.Bool("skip-goodput", false, "leave out the goodput curve under overload (up to 8,000 connections)")
	goodputConns := fs.String("goodput-conns", "", "closed-loop connection counts of the goodput curve, comma-separated (default 64,1000,2000,4000,8000; quick 64,2000,8000)")
	goodputOpen := fs.String("goodput-open", "", "open-loop points of the goodput curve as multiples of the measured capacity, comma-separated, or none (default 1,2,3; quick 1,2)")
	goodputSamples := fs.String("goodput-samples", "", "write every goodput point's attempts to DIR/goodput-POINT.tsv (outcome, start, latency, last try, retries)")
	skipQuota := fs.Bool("skip-quota", false, "leave out group 5: opening bursts and a steady sale on the whole dev stack")
	skipGossip := fs.Bool("skip-gossip", false, "leave out group 6: gossip spread and failure detection times, Redis scripts after a sellout")
	out := fs.String("results", "results", "directory for the JSON results (empty: none)")
	verbose := fs.Bool("v", false, "log progress to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (the generator and the direct rows; the HTTP targets too with -in-process) to this file")
	debugAddr := fs.String("debug-addr", "", "serve net/http/pprof of this process (the generator) on this loopback address while the bench runs, e.g. 127.0.0.1:6060")
	inProcess := fs.Bool("in-process", false, "serve the HTTP targets in the generator's process (sharing its Go scheduler and GC) rather than one process each")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := bench.FullConfig()
	if *quick {
		cfg = bench.QuickConfig()
	}
	if *dur > 0 {
		cfg.Duration = *dur
		if *warm == 0 {
			cfg.Warmup = *dur / 5
		}
	}
	if *warm > 0 {
		cfg.Warmup = *warm
	}
	if *rounds > 0 {
		cfg.Rounds = *rounds
	}
	if *workers > 0 {
		cfg.Workers = *workers
	}
	if *rate > 0 {
		cfg.Rate = *rate
	}
	if *delays != "" {
		cfg.Delays = nil
		for _, s := range strings.Split(*delays, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("-delays %q: %w", *delays, err)
			}
			cfg.Delays = append(cfg.Delays, d)
		}
	}
	cfg.SkipPostgres = *skipPG
	cfg.SkipGoodput = *skipGoodput
	switch *goodputOpen {
	case "":
	case "none":
		cfg.NoGoodputOpen = true
	default:
		for _, s := range strings.Split(*goodputOpen, ",") {
			k, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || k <= 0 {
				return fmt.Errorf("-goodput-open %q: want positive multiples, comma-separated, or none", *goodputOpen)
			}
			cfg.GoodputOpen = append(cfg.GoodputOpen, k)
		}
	}
	cfg.GoodputSamples = *goodputSamples
	if *goodputConns != "" {
		for _, s := range strings.Split(*goodputConns, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return fmt.Errorf("-goodput-conns %q: want positive integers, comma-separated", *goodputConns)
			}
			cfg.GoodputConns = append(cfg.GoodputConns, n)
		}
	}
	cfg.SkipQuota = *skipQuota
	cfg.SkipGossip = *skipGossip
	cfg.InProcess = *inProcess
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	cfg.ResultsDir = *out
	cfg.Out = stdout
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *debugAddr != "" {
		if err := loadgen.CheckLoopback("http://" + *debugAddr); err != nil {
			return fmt.Errorf("-debug-addr: %w", err)
		}
		ln, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			return fmt.Errorf("-debug-addr: %w", err)
		}
		defer ln.Close()
		go func() { _ = http.Serve(ln, nil) }() // the default mux: net/http/pprof's handlers
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	_, err := bench.Run(ctx, cfg)
	fmt.Fprintf(stderr, "bench: done in %v\n", time.Since(start).Round(100*time.Millisecond))
	return err
}
