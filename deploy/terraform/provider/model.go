package provider

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
)

// nameRE is the coordinator's rule for sale ids and region names
// (coordinator/validate.go): they end up in etcd keys and Redis hash tags.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

const nameRule = "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"

// saleModel is flashsale_sale, in the resource and the data source alike.
type saleModel struct {
	ID             types.String `tfsdk:"id"`
	Total          types.Int64  `tfsdk:"total"`
	PerUserLimit   types.Int64  `tfsdk:"per_user_limit"`
	StartsAt       types.String `tfsdk:"starts_at"`
	EndsAt         types.String `tfsdk:"ends_at"`
	ReservationTTL types.String `tfsdk:"reservation_ttl"`
	Regions        types.Map    `tfsdk:"regions"`
	State          types.String `tfsdk:"state"`
}

// regionModel is one region's place in a sale, keyed by its name.
type regionModel struct {
	Weight types.Int64 `tfsdk:"weight"`
	Min    types.Int64 `tfsdk:"min"`
	Max    types.Int64 `tfsdk:"max"`
}

var regionType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"weight": types.Int64Type, "min": types.Int64Type, "max": types.Int64Type,
}}

// regions returns the known regions of m (nil when m is null or unknown).
func regions(ctx context.Context, m types.Map) (map[string]regionModel, diag.Diagnostics) {
	if m.IsNull() || m.IsUnknown() {
		return nil, nil
	}
	out := map[string]regionModel{}
	diags := m.ElementsAs(ctx, &out, false)
	return out, diags
}

// toProto builds the API's sale from a fully known plan.
func (m saleModel) toProto(ctx context.Context) (*api.Sale, diag.Diagnostics) {
	var diags diag.Diagnostics
	starts, err := time.Parse(time.RFC3339, m.StartsAt.ValueString())
	if err != nil {
		diags.AddError("Invalid starts_at", err.Error())
	}
	ends, err := time.Parse(time.RFC3339, m.EndsAt.ValueString())
	if err != nil {
		diags.AddError("Invalid ends_at", err.Error())
	}
	ttl, err := time.ParseDuration(m.ReservationTTL.ValueString())
	if err != nil {
		diags.AddError("Invalid reservation_ttl", err.Error())
	}
	rs, d := regions(ctx, m.Regions)
	diags.Append(d...)
	if diags.HasError() {
		return nil, diags
	}
	s := &api.Sale{
		Id: m.ID.ValueString(), Total: m.Total.ValueInt64(), PerUserLimit: m.PerUserLimit.ValueInt64(),
		StartsAt: timestamppb.New(starts), EndsAt: timestamppb.New(ends), ReservationTtl: durationpb.New(ttl),
	}
	names := make([]string, 0, len(rs))
	for n := range rs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := rs[n]
		s.Regions = append(s.Regions, &api.RegionSpec{Name: n, Weight: r.Weight.ValueInt64(), Min: r.Min.ValueInt64(), Max: r.Max.ValueInt64()})
	}
	return s, nil
}

// fromProto sets m to what the coordinator holds. A time or duration
// written differently in m but meaning the same instant or length is kept
// as written, so "5m" in the configuration is not drift against "5m0s".
func (m *saleModel) fromProto(ctx context.Context, s *api.Sale) diag.Diagnostics {
	m.ID = types.StringValue(s.Id)
	m.Total = types.Int64Value(s.Total)
	m.PerUserLimit = types.Int64Value(s.PerUserLimit)
	m.StartsAt = sameInstant(m.StartsAt, s.StartsAt.AsTime())
	m.EndsAt = sameInstant(m.EndsAt, s.EndsAt.AsTime())
	m.ReservationTTL = sameDuration(m.ReservationTTL, s.ReservationTtl.AsDuration())
	m.State = types.StringValue(s.State)
	rs := map[string]regionModel{}
	for _, r := range s.Regions {
		rs[r.Name] = regionModel{Weight: types.Int64Value(r.Weight), Min: types.Int64Value(r.Min), Max: types.Int64Value(r.Max)}
	}
	var diags diag.Diagnostics
	m.Regions, diags = types.MapValueFrom(ctx, regionType, rs)
	return diags
}

func sameInstant(prev types.String, t time.Time) types.String {
	if p, err := time.Parse(time.RFC3339, prev.ValueString()); err == nil && p.Equal(t) {
		return prev
	}
	return types.StringValue(t.UTC().Format(time.RFC3339Nano))
}

func sameDuration(prev types.String, d time.Duration) types.String {
	if p, err := time.ParseDuration(prev.ValueString()); err == nil && p == d {
		return prev
	}
	return types.StringValue(formatDuration(d))
}

// formatDuration writes 5m rather than Go's 5m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	for _, suf := range []string{"h0m0s", "m0s"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			return s[:len(s)-len(suf)+1]
		}
	}
	return s
}

// held is what a sale's regions hold and cannot give back, as the
// coordinator counts it for a lowered total (quota.SetTotal): sold and
// reserved in reporting regions, the whole net grant of a silent one.
func held(st *api.SaleStatusResponse) (sold, reserved, silent int64) {
	for _, r := range st.Regions {
		if !r.Reported {
			silent += r.Net
			continue
		}
		sold += r.Sold
		reserved += r.Reserved
	}
	return sold, reserved, silent
}

func describeHeld(total int64, st *api.SaleStatusResponse) string {
	sold, reserved, silent := held(st)
	return fmt.Sprintf("total %d is below the %d units the regions of sale %s hold (%d sold, %d reserved, %d granted to regions not reporting); the lowest total now is %d",
		total, sold+reserved+silent, st.GetSale().GetId(), sold, reserved, silent, sold+reserved+silent)
}
