package main

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
)

// errNotReady makes the exit status non-zero after the checks are printed.
var errNotReady = errors.New("not ready: see the failed checks above")

func newReadinessCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "readiness [SALE]",
		Short: "Check that the deployment can run a sale: leader, agents, fresh reports, durable Redis, scripts, clocks, sum of grants (exit status 1 when not ready)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *api.ReadinessResponse
			err := call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				r, err = c.Readiness(ctx, &api.ReadinessRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if len(args) == 1 {
				r = forSale(r, args[0])
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

// forSale keeps the deployment-wide and per-region checks and those of one
// sale (named check/<sale> or check/<sale>/<region>), and judges readiness
// on them alone.
func forSale(r *api.ReadinessResponse, sale string) *api.ReadinessResponse {
	out := &api.ReadinessResponse{Ready: true, Leader: r.Leader}
	for _, c := range r.Checks {
		parts := strings.Split(c.Name, "/")
		perSale := len(parts) == 3 || (len(parts) == 2 && (parts[0] == "i2" || parts[0] == "alloc"))
		if perSale && parts[1] != sale {
			continue
		}
		out.Checks = append(out.Checks, c)
		out.Ready = out.Ready && c.Ok
	}
	return out
}
