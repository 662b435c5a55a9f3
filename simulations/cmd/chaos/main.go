// Command chaos runs the fault scenarios (simulations/chaos) against the
// real binaries on this machine and prints one table row per scenario:
// sold, oversold (must be 0), acknowledged reservations lost (must be 0),
// stranded units, the time from the heal to the region selling again, and
// whether the history of every request was linearizable. `make chaos` runs
// the full suite; -short the one `make test` runs.
//
// It exits non-zero when a scenario fails or a negative control is not
// caught. Scenarios on an unsafe setting are MEASURED: their losses are
// reported, not judged.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"

	"flashsale/simulations/chaos"
)

var errFailed = errors.New("scenarios failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if !errors.Is(err, errFailed) {
			fmt.Fprintln(os.Stderr, "chaos:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(out)
	short := fs.Bool("short", false, "the short suite (what make test runs) with its shorter faults")
	only := fs.String("run", "", "comma-separated scenario names to run (default: the whole suite)")
	list := fs.Bool("list", false, "list the scenarios and exit")
	results := fs.String("results", "results", "directory for failed histories' visualizations")
	keep := fs.Bool("keep", false, "keep the work directory (process logs, data) after the run")
	history := fs.String("check-history", "", "check a saved history (a run's history.json, kept with -keep) against the model and exit")
	total := fs.Int64("total", chaos.FullOptions().Total, "with -check-history: the sale's stock")
	timeout := fs.Duration("check-timeout", 5*time.Minute, "with -check-history: porcupine's budget")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *history != "" {
		return checkHistory(out, *history, *total, *timeout, filepath.Join(*results, filepath.Base(*history)+".html"))
	}
	if *list {
		for _, sc := range chaos.Scenarios() {
			tags := ""
			if sc.Short {
				tags += " [short]"
			}
			if sc.Negative {
				tags += " [negative control]"
			}
			if sc.Unsafe {
				tags += " [unsafe setting: measured]"
			}
			fmt.Fprintf(out, "%-32s %s%s\n", sc.Name, sc.What, tags)
		}
		return nil
	}
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	scenarios, err := chaos.Select(*short, names)
	if err != nil {
		return err
	}
	opts := chaos.FullOptions()
	if *short {
		opts = chaos.ShortOptions()
	}
	opts.ResultsDir, opts.Log = *results, out
	dir, err := os.MkdirTemp("", "flashsale-chaos-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(out, "chaos: work directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	start := time.Now()
	fmt.Fprintln(out, "chaos: building cmd/flashsale")
	bin, err := chaos.Build(ctx, dir)
	if err != nil {
		return err
	}
	rows := chaos.Suite(ctx, bin, filepath.Join(dir, "runs"), scenarios, opts)
	fmt.Fprintf(out, "\nchaos suite in %v\n", time.Since(start).Round(time.Second))
	chaos.PrintTable(out, rows)
	for _, r := range rows {
		if r.Failed() || r.Status == chaos.NotRun {
			return errFailed
		}
	}
	return nil
}

// checkHistory checks a history saved by a run against the model, as the
// run did, with a budget of its own: a run's check that timed out can be
// retried here for longer.
func checkHistory(out io.Writer, path string, total int64, timeout time.Duration, html string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var ops []chaos.Op
	if err := json.Unmarshal(b, &ops); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	hc, err := chaos.CheckHistory(ops, total, 1, timeout, html)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %d ops (%d unknown), %s in %v\n", path, hc.Ops, hc.Unknown, hc.Result, hc.Took.Round(time.Millisecond))
	if hc.HTML != "" {
		fmt.Fprintln(out, "history visualization:", hc.HTML)
	}
	if hc.Result != porcupine.Ok {
		return errFailed
	}
	return nil
}
