package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

func newMoveCmd() *cobra.Command {
	var m api.MoveRequest
	var wait time.Duration
	cmd := &cobra.Command{
		Use:     "move SALE --from R --to R --units N",
		Short:   "Move unsold quota from one region to another (granted once the source releases it)",
		Example: "  flashctl move phone --from ap --to us --units 500",
		Args:    needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m.Sale = args[0]
			if m.To == "" {
				return fmt.Errorf("--to is required: the region that receives the units")
			}
			if m.Units <= 0 {
				return fmt.Errorf("--units %d: must be a positive number of units", m.Units)
			}
			var p *api.Plan
			err := call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				p, err = c.Move(ctx, &m)
				return err
			})
			if err != nil {
				return err
			}
			if err := emit(cmd.OutOrStdout(), p, func(w io.Writer) { planTable(w, p) }); err != nil {
				return err
			}
			return waitReleases(cmd.Context(), cmd.ErrOrStderr(), wait, p)
		},
	}
	cmd.Flags().StringVar(&m.From, "from", "", "region giving the units (empty: the unallocated pool)")
	cmd.Flags().StringVar(&m.To, "to", "", "region receiving the units")
	cmd.Flags().Int64Var(&m.Units, "units", 0, "how many units")
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "wait this long for the release to be acknowledged (0: do not wait)")
	return cmd
}
