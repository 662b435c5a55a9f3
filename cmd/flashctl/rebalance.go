package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

func newRebalanceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rebalance", Short: "Show or apply the demand-driven rebalance of a sale"}
	plan := &cobra.Command{
		Use:   "plan SALE",
		Short: "Show what the rebalancer would do now",
		Args:  needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), func(ctx context.Context, c *client) error {
				p, err := c.PlanRebalance(ctx, &api.SaleRef{Id: args[0]})
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), p, func(w io.Writer) { planTable(w, p) })
			})
		},
	}
	var dryRun bool
	var wait time.Duration
	var rev int64
	apply := &cobra.Command{
		Use:   "apply SALE",
		Short: "Apply the rebalance plan (refused if the allocation changed since --revision)",
		Args:  needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p *api.Plan
			err := call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				if dryRun {
					p, err = c.PlanRebalance(ctx, &api.SaleRef{Id: args[0]})
				} else {
					p, err = c.ApplyRebalance(ctx, &api.ApplyRebalanceRequest{Id: args[0], AllocRevision: rev})
				}
				return err
			})
			if err != nil {
				return err
			}
			if err := emit(cmd.OutOrStdout(), p, func(w io.Writer) { planTable(w, p) }); err != nil {
				return err
			}
			if dryRun {
				return nil
			}
			return waitReleases(cmd.Context(), cmd.ErrOrStderr(), wait, p)
		},
	}
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "show the plan without applying it")
	apply.Flags().Int64Var(&rev, "revision", 0, "apply only if the allocation is still at this revision (from `rebalance plan`)")
	apply.Flags().DurationVar(&wait, "wait", 30*time.Second, "wait this long for the releases to be acknowledged (0: do not wait)")
	cmd.AddCommand(plan, apply)
	return cmd
}
