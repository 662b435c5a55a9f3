package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

func newStatusCmd() *cobra.Command {
	var watch bool
	var every time.Duration
	var times int
	cmd := &cobra.Command{
		Use:   "status SALE",
		Short: "Per-region quota and sales of one sale, with a totals row",
		Args:  needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			for i := 0; ; i++ {
				err := call(cmd.Context(), func(ctx context.Context, c *client) error {
					st, err := c.SaleStatus(ctx, &api.SaleRef{Id: args[0]})
					if err != nil {
						return err
					}
					if watch && g.output == "table" {
						fmt.Fprint(out, "\033[H\033[2J") // redraw in place
					}
					return emit(out, st, func(w io.Writer) { statusTable(w, st) })
				})
				if err != nil || !watch || (times > 0 && i+1 >= times) {
					return err
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw until interrupted")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "redraw period with --watch")
	cmd.Flags().IntVar(&times, "count", 0, "with --watch, stop after this many redraws (0: until interrupted)")
	return cmd
}

func statusTable(w io.Writer, st *api.SaleStatusResponse) {
	state := st.Sale.GetState()
	if st.Open {
		state += " (open)"
	}
	row(w, "SALE", st.Sale.GetId(), "STATE", state, "TOTAL", st.Sale.GetTotal(), "UNALLOCATED", st.Unallocated)
	row(w)
	row(w, "REGION", "GRANTED", "RELEASED", "NET", "SOLD", "RESERVED", "AVAILABLE", "DEMAND/S", "SELLERS", "REPORT AGE", "PENDING")
	for _, r := range append(st.Regions, st.Totals) {
		if r == nil {
			continue
		}
		age := "-"
		switch {
		case r.Region == "total":
		case !r.Reported:
			age = "no report"
		default:
			age = dur(r.ReportAge)
			if !r.Fresh {
				age += " (stale)"
			}
		}
		if r.Halted {
			age += " HALTED"
		}
		pending := "-"
		if r.PendingReleaseId != "" {
			pending = fmt.Sprintf("release %d", r.PendingUnits)
			if r.PendingTo != "" {
				pending += " to " + r.PendingTo
			}
		}
		sellers := "-" // the region does not gossip, or the total row
		if n := len(r.Sellers); n > 0 {
			sellers = fmt.Sprint(n)
		}
		row(w, r.Region, r.Granted, r.Released, r.Net, r.Sold, r.Reserved, r.Available, fmt.Sprintf("%.1f", r.Demand), sellers, age, pending)
	}
}
