// Command protosim runs the deterministic protocol simulation over many
// seeds and prints, as its last line,
//
//	seeds=N violations=V stranded_max=X etcd_writes_per_1000=Y
//
// where Y is etcd writes (allocation and reports) per 1000 units sold. It
// exits non-zero when a seed violates an invariant, naming the seed and the
// flags that replay it with a trace.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"flashsale/simulations/protosim"
)

// errViolations makes the exit status non-zero after the summary is printed.
var errViolations = errors.New("invariant violations found")

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, errViolations) {
			fmt.Fprintln(os.Stderr, "protosim:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("protosim", flag.ContinueOnError)
	fs.SetOutput(out)
	seeds := fs.Int("seeds", protosim.DefaultSeeds, "number of seeds to run (1..N)")
	seed := fs.Uint64("seed", 0, "run only this seed (with -trace, print every step)")
	regions := fs.Int("regions", protosim.DefaultConfig().Regions, "number of regions")
	trace := fs.Bool("trace", false, "print every step of each seed (use with -seed)")
	bugName := fs.String("inject-bug", "", fmt.Sprintf("switch on a protocol bug the checks must catch: %v", protosim.Bugs))
	verbose := fs.Bool("v", false, "print one line per seed")
	burst := fs.Bool("burst", false, "run the opening burst (no faults, 90% of buyers in one region) and check liveness")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	bug, err := protosim.ParseBug(*bugName)
	if err != nil {
		return err
	}
	first, n := uint64(1), *seeds
	if *seed != 0 {
		first, n = *seed, 1
	}
	if n < 1 {
		return fmt.Errorf("-seeds %d: want at least 1", n)
	}

	cfg := protosim.DefaultConfig()
	if *burst {
		cfg = protosim.BurstConfig()
	}
	cfg.Regions, cfg.Bug = *regions, bug
	if *trace {
		cfg.Trace = out
	}
	bugLabel := string(bug)
	if bug == protosim.BugNone {
		bugLabel = "none"
	}
	fmt.Fprintf(out, "protosim: %d seeds from %d, %d regions, %d units, %d+%d steps of %d ms, bug=%s\n",
		n, first, cfg.Regions, cfg.Total, cfg.MainSteps, cfg.HealSteps, cfg.StepMillis, bugLabel)

	var (
		sum         protosim.Stats
		violations  int
		firstFail   *protosim.Result
		strandedMax int64
	)
	for i := range n {
		cfg.Seed = first + uint64(i)
		res, err := protosim.Run(cfg)
		if err != nil {
			return err
		}
		sum.Add(res.Stats)
		strandedMax = max(strandedMax, res.Stats.Stranded)
		if res.Violation != nil {
			violations++
			if firstFail == nil {
				firstFail = &res
			}
		}
		if *verbose || n == 1 {
			printSeed(out, res)
		}
	}

	st := sum
	fmt.Fprintf(out, "per seed (mean): sold=%.1f stranded=%.2f alloc_writes=%.1f report_writes=%.1f grants=%.1f moves=%.1f acks=%.1f; acks_from_overwritten_reports_refused=%d (total)\n",
		mean(st.Sold, n), mean(st.Stranded, n), mean(st.AllocWrites, n), mean(st.ReportWrites, n),
		mean(st.Grants, n), mean(st.Moves, n), mean(st.Acks, n), st.AckReportMoved)
	fmt.Fprintf(out, "stranding: at the end max=%d; held by cut-off regions at once max=%d units\n", strandedMax, st.CutOffPeak)
	fmt.Fprintf(out, "faults (total): leader_changes=%d leader_crashes=%d fenced_leader_writes=%d agent_crashes=%d agent_terms=%d stale_agent_refused=%d fenced_reports=%d partitions=%d failovers=%d lost_detected=%d reconciles=%d erased_reservations=%d crash_points=%d\n",
		st.LeaderChanges, st.LeaderCrashes, st.FencedWrites, st.AgentCrashes, st.AgentTerms, st.StaleRefused,
		st.FencedReports, st.Partitions, st.Failovers, st.LostDetected, st.Reconciles, st.LostResv, st.CrashPoints)
	fmt.Fprintf(out, "network (total): messages=%d dropped=%d duplicated=%d; buyers: reserve_calls=%d reservations=%d confirms=%d cancels_expiries=%d\n",
		st.Messages, st.Dropped, st.Duplicated, st.ReserveCalls, st.Reservations, st.Confirms, st.CancelsExpires)
	if firstFail != nil {
		fmt.Fprintf(out, "FAIL seed %d: %s\n", firstFail.Seed, firstFail.Violation)
		replay := fmt.Sprintf("go run ./simulations/cmd/protosim -seed %d -trace -regions %d", firstFail.Seed, cfg.Regions)
		if bug != protosim.BugNone {
			replay += " -inject-bug " + string(bug)
		}
		fmt.Fprintf(out, "replay: %s\n", replay)
	}
	perK := 0.0
	if st.Sold > 0 {
		perK = float64(st.AllocWrites+st.ReportWrites) * 1000 / float64(st.Sold)
	}
	fmt.Fprintf(out, "seeds=%d violations=%d stranded_max=%d etcd_writes_per_1000=%.0f\n", n, violations, strandedMax, perK)
	if violations > 0 {
		return errViolations
	}
	return nil
}

func printSeed(out io.Writer, r protosim.Result) {
	status := "ok"
	if r.Violation != nil {
		status = "VIOLATION " + r.Violation.String()
	}
	s := r.Stats
	fmt.Fprintf(out, "seed %d: sold=%d stranded=%d cut_off_peak=%d alloc_writes=%d report_writes=%d moves=%d failovers=%d reconciles=%d fenced_leader_writes=%d: %s\n",
		r.Seed, s.Sold, s.Stranded, s.CutOffPeak, s.AllocWrites, s.ReportWrites, s.Moves, s.Failovers, s.Reconciles, s.FencedWrites, status)
}

func mean(v int64, n int) float64 { return float64(v) / float64(n) }
