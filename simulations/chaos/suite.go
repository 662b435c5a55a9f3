package chaos

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Suite runs scenarios one after another, each on a fresh deployment, and
// returns their rows.
func Suite(ctx context.Context, bin, dir string, scenarios []Scenario, o Options) []Row {
	var rows []Row
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			rows = append(rows, Row{Scenario: sc.Name, Status: NotRun, Note: "the run was cut short"})
			continue
		}
		rows = append(rows, Run(ctx, bin, dir, sc, o))
	}
	return rows
}

// PrintTable writes the rows as a table, each failure's violations after
// it, and a closing count line.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "scenario\tstatus\tsold\theld\toversold\tack lost\tstranded\trecover\tops\tunknown\tlinearizable\tpolls\t")
	for _, r := range rows {
		if r.Status == NotRun {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n", r.Scenario, r.Status)
			continue
		}
		rec := "-"
		if r.Recovered {
			rec = r.Recover.Round(time.Millisecond).String()
		} else if r.Recover == 0 && r.Status != Fail {
			rec = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%d\t\n", r.Scenario, r.Status, r.Sold, r.Held, r.Oversold,
			r.AckLost, r.Stranded, rec, r.Ops, r.Unknown, orDash(string(r.Linearizable)), r.Polls)
	}
	tw.Flush()
	pass, fail, notRun := 0, 0, 0
	for _, r := range rows {
		switch {
		case r.Status == NotRun:
			notRun++
		case r.Failed():
			fail++
		default:
			pass++
		}
		if r.Note != "" || len(r.Violations) > 0 || r.HTML != "" {
			fmt.Fprintf(w, "%s (%s, %v):", r.Scenario, r.Status, r.Took.Round(time.Second))
			if r.Note != "" {
				fmt.Fprintf(w, " %s", r.Note)
			}
			fmt.Fprintln(w)
			for i, v := range r.Violations {
				if i == 8 {
					fmt.Fprintf(w, "    ... and %d more\n", len(r.Violations)-8)
					break
				}
				fmt.Fprintf(w, "    %s\n", strings.TrimSpace(v))
			}
			if r.HTML != "" {
				fmt.Fprintf(w, "    history visualization: %s\n", r.HTML)
			}
		}
	}
	fmt.Fprintf(w, "chaos: %d passed, %d failed, %d not run\n", pass, fail, notRun)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
