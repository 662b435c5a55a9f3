package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"flashsale/coordinator/api"
)

func newSaleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sale", Short: "Create, list, show, update, end, pause and resume sales"}
	cmd.AddCommand(newSaleCreateCmd(), newSaleListCmd(), newSaleUpdateCmd(),
		saleRefCmd("get", "Show one sale", func(ctx context.Context, c *client, id string) (*api.Sale, error) {
			return c.GetSale(ctx, &api.GetSaleRequest{Id: id})
		}),
		saleRefCmd("end", "End a sale now (leftovers are swept)", func(ctx context.Context, c *client, id string) (*api.Sale, error) {
			return c.EndSale(ctx, &api.SaleRef{Id: id})
		}),
		saleRefCmd("pause", "Stop grants and rebalancing for a sale", func(ctx context.Context, c *client, id string) (*api.Sale, error) {
			return c.PauseSale(ctx, &api.SaleRef{Id: id})
		}),
		saleRefCmd("resume", "Resume a paused sale", func(ctx context.Context, c *client, id string) (*api.Sale, error) {
			return c.ResumeSale(ctx, &api.SaleRef{Id: id})
		}))
	return cmd
}

func saleRefCmd(use, short string, f func(ctx context.Context, c *client, id string) (*api.Sale, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " SALE",
		Short: short,
		Args:  needArgs("SALE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(cmd.Context(), func(ctx context.Context, c *client) error {
				s, err := f(ctx, c, args[0])
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), s, func(w io.Writer) { saleTable(w, s) })
			})
		},
	}
}

func newSaleListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List sales",
		Args:  needArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return call(cmd.Context(), func(ctx context.Context, c *client) error {
				r, err := c.ListSales(ctx, &api.ListSalesRequest{})
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), r, func(w io.Writer) {
					row(w, "ID", "STATE", "TOTAL", "PER-USER", "STARTS", "ENDS", "REGIONS")
					for _, s := range r.Sales {
						row(w, s.Id, s.State, s.Total, s.PerUserLimit, ts(s.StartsAt), ts(s.EndsAt), regionNames(s))
					}
				})
			})
		},
	}
}

func saleTable(w io.Writer, s *api.Sale) {
	row(w, "ID", "STATE", "TOTAL", "PER-USER", "STARTS", "ENDS", "TTL", "REGIONS")
	row(w, s.Id, s.State, s.Total, s.PerUserLimit, ts(s.StartsAt), ts(s.EndsAt), dur(s.ReservationTtl), regionNames(s))
}

func regionNames(s *api.Sale) string {
	parts := make([]string, len(s.Regions))
	for i, r := range s.Regions {
		parts[i] = r.Name
		if r.Weight > 1 {
			parts[i] += "=" + strconv.FormatInt(r.Weight, 10)
		}
	}
	return strings.Join(parts, ",")
}

// saleFile is a sale as written in a YAML or JSON file for `sale create -f`.
type saleFile struct {
	ID             string       `json:"id" yaml:"id"`
	Total          int64        `json:"total" yaml:"total"`
	PerUserLimit   int64        `json:"perUserLimit" yaml:"perUserLimit"`
	StartsAt       string       `json:"startsAt" yaml:"startsAt"`
	EndsAt         string       `json:"endsAt" yaml:"endsAt"`
	Duration       string       `json:"duration" yaml:"duration"`
	ReservationTTL string       `json:"reservationTTL" yaml:"reservationTTL"`
	Regions        []regionFile `json:"regions" yaml:"regions"`
}

type regionFile struct {
	Name   string `json:"name" yaml:"name"`
	Weight int64  `json:"weight" yaml:"weight"`
	Min    int64  `json:"min" yaml:"min"`
	Max    int64  `json:"max" yaml:"max"`
}

func newSaleCreateCmd() *cobra.Command {
	var f saleFile
	var file, regions string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sale from flags or from a YAML/JSON file (-f)",
		Example: `  flashctl sale create --id phone --total 10000 --regions us,eu,ap --starts-at +10s --duration 1h
  flashctl sale create -f sale.yaml`,
		Args: needArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file != "" {
				if err := readSaleFile(file, &f); err != nil {
					return err
				}
			} else if err := parseRegions(regions, &f); err != nil {
				return err
			}
			sale, err := f.toProto(time.Now())
			if err != nil {
				return err
			}
			return call(cmd.Context(), func(ctx context.Context, c *client) error {
				s, err := c.CreateSale(ctx, &api.CreateSaleRequest{Sale: sale})
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), s, func(w io.Writer) { saleTable(w, s) })
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "", "read the sale from this YAML or JSON file instead of flags")
	fl.StringVar(&f.ID, "id", "", "sale id, e.g. phone-2026")
	fl.Int64Var(&f.Total, "total", 0, "units for sale in all regions together")
	fl.Int64Var(&f.PerUserLimit, "per-user-limit", 1, "units one user may hold, across regions")
	fl.StringVar(&f.StartsAt, "starts-at", "+5s", "opening time: RFC3339, or +DURATION from now")
	fl.StringVar(&f.EndsAt, "ends-at", "", "closing time: RFC3339, or +DURATION from now (default: --duration after the start)")
	fl.StringVar(&f.Duration, "duration", "1h", "how long the sale runs, when --ends-at is not given")
	fl.StringVar(&f.ReservationTTL, "reservation-ttl", "5m", "how long a reservation waits for payment")
	fl.StringVar(&regions, "regions", "", "regions and optional weights: us,eu,ap or us=2,eu=1")
	return cmd
}

func readSaleFile(path string, f *saleFile) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	if strings.HasSuffix(path, ".json") {
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func parseRegions(s string, f *saleFile) error {
	if s == "" {
		return fmt.Errorf("--regions is required, e.g. --regions us,eu,ap")
	}
	for _, part := range strings.Split(s, ",") {
		name, w, hasW := strings.Cut(strings.TrimSpace(part), "=")
		weight := int64(1)
		if hasW {
			n, err := strconv.ParseInt(w, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("--regions: weight %q of region %q must be a positive integer", w, name)
			}
			weight = n
		}
		f.Regions = append(f.Regions, regionFile{Name: name, Weight: weight})
	}
	return nil
}

// toProto checks what only the client can check (times and durations as
// written); the coordinator validates the rest and names the bad field.
func (f *saleFile) toProto(now time.Time) (*api.Sale, error) {
	if f.ID == "" {
		return nil, fmt.Errorf("sale id is required (--id or `id:` in the file)")
	}
	starts, err := parseTime("startsAt (--starts-at)", f.StartsAt, now, now)
	if err != nil {
		return nil, err
	}
	var ends time.Time
	if f.EndsAt != "" {
		if ends, err = parseTime("endsAt (--ends-at)", f.EndsAt, now, now); err != nil {
			return nil, err
		}
	} else {
		d, err := parseDur("duration (--duration)", f.Duration, time.Hour)
		if err != nil {
			return nil, err
		}
		ends = starts.Add(d)
	}
	ttl, err := parseDur("reservationTTL (--reservation-ttl)", f.ReservationTTL, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	s := &api.Sale{
		Id: f.ID, Total: f.Total, PerUserLimit: f.PerUserLimit,
		StartsAt: timestamppb.New(starts), EndsAt: timestamppb.New(ends),
		ReservationTtl: durationpb.New(ttl),
	}
	if s.PerUserLimit == 0 {
		s.PerUserLimit = 1
	}
	for _, r := range f.Regions {
		s.Regions = append(s.Regions, &api.RegionSpec{Name: r.Name, Weight: max(r.Weight, 1), Min: r.Min, Max: r.Max})
	}
	return s, nil
}

func parseTime(field, v string, now, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	if rest, ok := strings.CutPrefix(v, "+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s %q: want RFC3339 or +DURATION like +30s", field, v)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC3339 (2026-11-24T12:00:00Z) or +DURATION like +30s", field, v)
	}
	return t, nil
}

func parseDur(field, v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration like 90s or 5m", field, v)
	}
	return d, nil
}
