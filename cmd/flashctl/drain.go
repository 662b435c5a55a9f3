package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

func newDrainCmd() *cobra.Command {
	var sale string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "drain REGION",
		Short: "Release a region's unsold quota (all sales, or --sale) and stop granting it more",
		Args:  needArgs("REGION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *api.DrainResponse
			err := call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				r, err = c.Drain(ctx, &api.DrainRequest{Region: args[0], Sale: sale})
				return err
			})
			if err != nil {
				return err
			}
			err = emit(cmd.OutOrStdout(), r, func(w io.Writer) {
				for i, p := range r.Plans {
					if i > 0 {
						row(w)
					}
					planTable(w, p)
				}
				if len(r.Plans) == 0 {
					row(w, "region "+args[0]+" holds no quota in any sale")
				}
			})
			if err != nil {
				return err
			}
			return waitReleases(cmd.Context(), cmd.ErrOrStderr(), wait, r.Plans...)
		},
	}
	cmd.Flags().StringVar(&sale, "sale", "", "drain only this sale")
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "wait this long for the releases to be acknowledged (0: do not wait)")
	return cmd
}
