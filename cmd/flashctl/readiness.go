package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"flashsale/coordinator/api"
	"flashsale/regional/redisstore"
)

// errNotReady makes the exit status non-zero after the checks are printed.
var errNotReady = errors.New("not ready: see the failed checks above")

func newReadinessCmd() *cobra.Command {
	var redisSpecs, durSpecs []string
	cmd := &cobra.Command{
		Use:   "readiness [SALE]",
		Short: "Check that the deployment can run a sale: leader, agents, fresh reports, durable Redis, scripts, clocks, sum of grants (exit status 1 when not ready)",
		Long: `Check that the deployment can run a sale (exit status 1 when not ready).

The coordinator reports its leader, the agents, their reports, durable Redis,
scripts, clocks and the sum of grants. With --redis, flashctl also checks a
region's Redis itself: the primary, that it runs as the region's durability
mode needs (--durability, default fsync), its replicas and their lag, and with
Sentinel the sentinels and their quorum (SENTINEL CKQUORUM).`,
		Example: `  flashctl readiness --redis us=sentinel:flashsale-us@127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381 --durability us=wait+fsync
  flashctl readiness demo --redis eu=127.0.0.1:6379`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			redisChecks, err := parseRedisChecks(redisSpecs, durSpecs)
			if err != nil {
				return err
			}
			var r *api.ReadinessResponse
			err = call(cmd.Context(), func(ctx context.Context, c *client) (err error) {
				r, err = c.Readiness(ctx, &api.ReadinessRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if len(args) == 1 {
				r = forSale(r, args[0])
			}
			for _, rc := range redisChecks {
				for _, c := range redisstore.CheckRedis(cmd.Context(), rc.conn, rc.dur) {
					r.Checks = append(r.Checks, &api.Check{Name: "redis-" + c.Name + "/" + rc.region, Ok: c.OK, Detail: c.Detail})
					r.Ready = r.Ready && c.OK
				}
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
	cmd.Flags().StringArrayVar(&redisSpecs, "redis", nil, "REGION=ADDR or REGION=sentinel:MASTER@HOST:PORT,...: also check that region's Redis (repeatable)")
	cmd.Flags().StringArrayVar(&durSpecs, "durability", nil, "REGION=MODE: the region's durability mode, fsync (default), wait or wait+fsync (repeatable)")
	return cmd
}

type redisCheck struct {
	region string
	conn   redisstore.Conn
	dur    redisstore.Durability
}

// parseRedisChecks reads --redis and --durability; a durability for a
// region without --redis is an error (it would check nothing).
func parseRedisChecks(redisSpecs, durSpecs []string) ([]redisCheck, error) {
	byRegion := map[string]*redisCheck{}
	for _, spec := range redisSpecs {
		region, addr, ok := strings.Cut(spec, "=")
		if !ok || region == "" {
			return nil, fmt.Errorf("--redis %q: want REGION=ADDR or REGION=sentinel:MASTER@HOST:PORT,...", spec)
		}
		conn, err := redisstore.ParseConn(addr)
		if err != nil {
			return nil, fmt.Errorf("--redis %q: %w", spec, err)
		}
		byRegion[region] = &redisCheck{region: region, conn: conn}
	}
	for _, spec := range durSpecs {
		region, mode, _ := strings.Cut(spec, "=")
		rc := byRegion[region]
		if rc == nil {
			return nil, fmt.Errorf("--durability %q: no --redis for region %q", spec, region)
		}
		m, err := redisstore.ParseDurabilityMode(mode)
		if err != nil {
			return nil, fmt.Errorf("--durability %q: %w", spec, err)
		}
		rc.dur.Mode = m
	}
	out := make([]redisCheck, 0, len(byRegion))
	for _, rc := range byRegion {
		out = append(out, *rc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].region < out[j].region })
	return out, nil
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
