package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
)

// saleUpdate holds the flags of `sale update`; only the flags given change
// the sale, the rest is sent back as the coordinator holds it.
type saleUpdate struct {
	total                  int64
	startsAt, endsAt, ttl  string
	weights, mins, maxes   string
	releaseWait            time.Duration
	changedTotal, anything bool
}

func newSaleUpdateCmd() *cobra.Command {
	var u saleUpdate
	cmd := &cobra.Command{
		Use:   "update SALE",
		Short: "Change a sale in place: total, region weights/min/max, window, reservation TTL",
		Long: `Change a sale's definition in place. Only the flags given change.

Raising --total adds the units to the pool, from which the rebalancer grants
them where they sell. Lowering it takes them from the pool first, then asks
the regions to release unsold quota and waits (--release-wait) for them; a
total below what is sold and reserved is refused, naming the numbers.
The regions and the per-user limit cannot change: create a sale with a new id.`,
		Example: `  flashctl sale update phone --total 12000
  flashctl sale update phone --weights us=3,eu=1 --max ap=500 --ends-at +2h`,
		Args: needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			u.changedTotal = fl.Changed("total")
			for _, f := range []string{"total", "starts-at", "ends-at", "reservation-ttl", "weights", "min", "max"} {
				u.anything = u.anything || fl.Changed(f)
			}
			if !u.anything {
				return fmt.Errorf("nothing to change: give --total, --weights, --min, --max, --starts-at, --ends-at or --reservation-ttl")
			}
			return call(cmd.Context(), func(ctx context.Context, c *client) error {
				cur, err := c.GetSale(ctx, &api.GetSaleRequest{Id: args[0]})
				if err != nil {
					return err
				}
				s, err := u.apply(cur, time.Now())
				if err != nil {
					return err
				}
				req := &api.UpdateSaleRequest{Sale: s}
				if u.releaseWait > 0 {
					req.ReleaseWait = durationpb.New(u.releaseWait)
				}
				got, err := c.UpdateSale(ctx, req)
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), got, func(w io.Writer) { saleTable(w, got) })
			})
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&u.total, "total", 0, "new total units (raising grants from the pool; lowering goes through releases)")
	fl.StringVar(&u.startsAt, "starts-at", "", "new opening time, before the sale opens: RFC3339 or +DURATION")
	fl.StringVar(&u.endsAt, "ends-at", "", "new closing time: RFC3339 or +DURATION from now")
	fl.StringVar(&u.ttl, "reservation-ttl", "", "new reservation TTL, e.g. 5m")
	fl.StringVar(&u.weights, "weights", "", "region weights to change: us=3,eu=1")
	fl.StringVar(&u.mins, "min", "", "region minimums to change: us=100")
	fl.StringVar(&u.maxes, "max", "", "region maximums to change (0: none): ap=500")
	fl.DurationVar(&u.releaseWait, "release-wait", 0, "how long a lowered total waits for the regions' releases (default 10s on the coordinator; keep it below --timeout)")
	return cmd
}

// apply returns cur with the flags' changes.
func (u *saleUpdate) apply(cur *api.Sale, now time.Time) (*api.Sale, error) {
	s := cur
	if u.changedTotal {
		s.Total = u.total
	}
	if u.startsAt != "" {
		t, err := parseTime("--starts-at", u.startsAt, now, now)
		if err != nil {
			return nil, err
		}
		s.StartsAt = timestamppb.New(t)
	}
	if u.endsAt != "" {
		t, err := parseTime("--ends-at", u.endsAt, now, now)
		if err != nil {
			return nil, err
		}
		s.EndsAt = timestamppb.New(t)
	}
	if u.ttl != "" {
		d, err := parseDur("--reservation-ttl", u.ttl, 0)
		if err != nil {
			return nil, err
		}
		s.ReservationTtl = durationpb.New(d)
	}
	for _, f := range []struct {
		flag, v string
		set     func(r *api.RegionSpec, n int64)
	}{
		{"--weights", u.weights, func(r *api.RegionSpec, n int64) { r.Weight = n }},
		{"--min", u.mins, func(r *api.RegionSpec, n int64) { r.Min = n }},
		{"--max", u.maxes, func(r *api.RegionSpec, n int64) { r.Max = n }},
	} {
		if err := setPerRegion(s, f.flag, f.v, f.set); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// setPerRegion applies "us=3,eu=1" to the sale's regions; a region the sale
// does not have is an error that lists the ones it has.
func setPerRegion(s *api.Sale, flag, v string, set func(r *api.RegionSpec, n int64)) error {
	if v == "" {
		return nil
	}
	for _, part := range strings.Split(v, ",") {
		name, num, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || n < 0 {
			return fmt.Errorf("%s: %q: want region=N with N a non-negative integer, e.g. us=3", flag, part)
		}
		found := false
		for _, r := range s.Regions {
			if r.Name == name {
				set(r, n)
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: sale %s has no region %q (it has %s)", flag, s.Id, name, regionNames(s))
		}
	}
	return nil
}
