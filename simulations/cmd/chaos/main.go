// Command chaos runs the fault scenarios (simulations/chaos) against the
// real binaries on this machine and prints one table row per scenario:
// sold, oversold (must be 0), acknowledged reservations lost (must be 0),
// stranded units, the time from the heal to the region selling again, and
// whether the history of every request was linearizable. `make chaos` runs
// the full suite; -short the one `make test` runs.
//
// It exits non-zero when a scenario fails or a negative control is not
// caught. Scenarios that need what is not built yet are listed NOT RUN,
// never passed.
package main

import (
	"context"
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
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
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
			if sc.NeedsHA != "" {
				tags += " [needs HA: NOT RUN]"
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
		if r.Failed() {
			return errFailed
		}
	}
	return nil
}
