package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

// errNotReady makes the exit status non-zero after the checks are printed.
var errNotReady = errors.New("not ready: see the failed checks above")

func newReadinessCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "readiness",
		Short: "Check that the deployment can run a sale (exit status 1 when not ready)",
		Args:  needArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r *api.ReadinessResponse
			err := call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				r, err = c.Readiness(ctx, &api.ReadinessRequest{})
				return err
			})
			if err != nil {
				return err
			}
			err = emit(cmd.OutOrStdout(), r, func(w io.Writer) {
				row(w, "CHECK", "OK", "DETAIL")
				for _, c := range r.Checks {
					ok := "ok"
					if !c.Ok {
						ok = "FAIL"
					}
					row(w, c.Name, ok, c.Detail)
				}
				verdict := "READY"
				if !r.Ready {
					verdict = "NOT READY"
				}
				row(w, verdict, "", "leader "+r.Leader)
			})
			if err != nil {
				return err
			}
			if !r.Ready {
				return errNotReady
			}
			return nil
		},
	}
}
