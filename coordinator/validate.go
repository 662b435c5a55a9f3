package coordinator

import (
	"fmt"
	"regexp"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/quota/layout"
)

// Sale ids and region names end up in etcd keys and in Redis hash tags
// ({sale:ID}), so '/', '{' and '}' must never get in.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Defaults filled in by CreateSale when a field is zero.
const (
	defaultPerUserLimit   = 1
	defaultReservationTTL = 10 * time.Minute
)

// argError is a bad argument; the API answers it with InvalidArgument.
type argError struct{ msg string }

func (e *argError) Error() string { return e.msg }

func badArg(format string, a ...any) error { return &argError{msg: fmt.Sprintf(format, a...)} }

func checkName(field, v string) error {
	if v == "" {
		return badArg("%s: required", field)
	}
	if !nameRE.MatchString(v) {
		return badArg("%s: %q must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit", field, v)
	}
	return nil
}

// specFromProto validates a sale from the API and returns it with defaults
// filled in.
func specFromProto(s *api.Sale) (layout.SaleSpec, error) {
	if s == nil {
		return layout.SaleSpec{}, badArg("sale: required")
	}
	if err := checkName("sale.id", s.Id); err != nil {
		return layout.SaleSpec{}, err
	}
	spec := layout.SaleSpec{
		ID:             s.Id,
		Total:          s.Total,
		PerUserLimit:   s.PerUserLimit,
		ReservationTTL: s.ReservationTtl.AsDuration(),
		State:          layout.SaleState(s.State),
	}
	switch {
	case s.Total <= 0:
		return spec, badArg("sale.total: %d must be positive", s.Total)
	case s.PerUserLimit < 0:
		return spec, badArg("sale.per_user_limit: %d must not be negative", s.PerUserLimit)
	case s.StartsAt == nil:
		return spec, badArg("sale.starts_at: required")
	case s.EndsAt == nil:
		return spec, badArg("sale.ends_at: required")
	case s.ReservationTtl != nil && s.ReservationTtl.AsDuration() < 0:
		return spec, badArg("sale.reservation_ttl: %v must not be negative", s.ReservationTtl.AsDuration())
	case len(s.Regions) == 0:
		return spec, badArg("sale.regions: at least one region is required")
	}
	if err := s.StartsAt.CheckValid(); err != nil {
		return spec, badArg("sale.starts_at: %v", err)
	}
	if err := s.EndsAt.CheckValid(); err != nil {
		return spec, badArg("sale.ends_at: %v", err)
	}
	spec.StartsAt, spec.EndsAt = s.StartsAt.AsTime().UTC(), s.EndsAt.AsTime().UTC()
	if !spec.EndsAt.After(spec.StartsAt) {
		return spec, badArg("sale.ends_at: %s must be after starts_at %s", spec.EndsAt.Format(time.RFC3339), spec.StartsAt.Format(time.RFC3339))
	}
	switch spec.State {
	case "":
		spec.State = layout.SaleActive
	case layout.SaleActive, layout.SalePaused:
	default:
		return spec, badArg("sale.state: %q must be active or paused", s.State)
	}
	if spec.PerUserLimit == 0 {
		spec.PerUserLimit = defaultPerUserLimit
	}
	if spec.ReservationTTL == 0 {
		spec.ReservationTTL = defaultReservationTTL
	}
	seen := map[string]bool{}
	var sumMin int64
	for i, r := range s.Regions {
		field := fmt.Sprintf("sale.regions[%d]", i)
		if r == nil {
			return spec, badArg("%s: required", field)
		}
		if err := checkName(field+".name", r.Name); err != nil {
			return spec, err
		}
		if seen[r.Name] {
			return spec, badArg("%s.name: %q appears twice", field, r.Name)
		}
		seen[r.Name] = true
		switch {
		case r.Weight < 0:
			return spec, badArg("%s.weight: %d must not be negative", field, r.Weight)
		case r.Min < 0:
			return spec, badArg("%s.min: %d must not be negative", field, r.Min)
		case r.Max < 0:
			return spec, badArg("%s.max: %d must not be negative (0 means no maximum)", field, r.Max)
		case r.Max > 0 && r.Max < r.Min:
			return spec, badArg("%s.max: %d is below min %d", field, r.Max, r.Min)
		}
		w := r.Weight
		if w == 0 {
			w = 1
		}
		sumMin += r.Min
		spec.Regions = append(spec.Regions, layout.RegionSpec{Name: r.Name, Weight: w, Min: r.Min, Max: r.Max})
	}
	if sumMin > spec.Total {
		return spec, badArg("sale.regions: minimums sum to %d, above total %d", sumMin, spec.Total)
	}
	return spec, nil
}

func specToProto(s layout.SaleSpec) *api.Sale {
	out := &api.Sale{
		Id:             s.ID,
		Total:          s.Total,
		PerUserLimit:   s.PerUserLimit,
		StartsAt:       timestamppb.New(s.StartsAt),
		EndsAt:         timestamppb.New(s.EndsAt),
		ReservationTtl: durationpb.New(s.ReservationTTL),
		State:          string(s.State),
	}
	for _, r := range s.Regions {
		out.Regions = append(out.Regions, &api.RegionSpec{Name: r.Name, Weight: r.Weight, Min: r.Min, Max: r.Max})
	}
	return out
}
