package provider

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// Unit tests of plan-time validation: each validator on good and bad
// values, and the checks across attributes. No terraform binary needed.

func TestStringValidators(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		v    validator.String
		in   string
		bad  string // part of the error detail; empty: valid
	}{
		{"name ok", nameValidator{}, "phone-2026.v1", ""},
		{"name slash", nameValidator{}, "a/b", `"a/b" must be 1-64 characters`},
		{"name brace", nameValidator{}, "{x}", "must be 1-64"},
		{"name long", nameValidator{}, strings.Repeat("a", 65), "must be 1-64"},
		{"time ok", rfc3339Validator{}, "2026-11-24T12:00:00Z", ""},
		{"time offset ok", rfc3339Validator{}, "2026-11-24T12:00:00+01:00", ""},
		{"time bad", rfc3339Validator{}, "tomorrow noon", "is not an RFC 3339 time"},
		{"duration ok", durationValidator{}, "1h30m", ""},
		{"duration zero", durationValidator{}, "0s", "not a positive duration"},
		{"duration words", durationValidator{}, "5 minutes", "not a positive duration"},
	} {
		var resp validator.StringResponse
		tc.v.ValidateString(ctx, validator.StringRequest{Path: path.Root("x"), ConfigValue: types.StringValue(tc.in)}, &resp)
		if got := detail(resp.Diagnostics.Errors()); (tc.bad == "") != (got == "") || !strings.Contains(got, tc.bad) {
			t.Errorf("%s: %q gave %q, want an error containing %q", tc.name, tc.in, got, tc.bad)
		}
		// Unknown values (known only after apply) are never refused.
		var u validator.StringResponse
		tc.v.ValidateString(ctx, validator.StringRequest{Path: path.Root("x"), ConfigValue: types.StringUnknown()}, &u)
		if u.Diagnostics.HasError() {
			t.Errorf("%s: unknown value refused", tc.name)
		}
	}
}

func TestAtLeastAndRegionKeys(t *testing.T) {
	ctx := context.Background()
	var r validator.Int64Response
	atLeast{1}.ValidateInt64(ctx, validator.Int64Request{Path: path.Root("total"), ConfigValue: types.Int64Value(0)}, &r)
	if got := detail(r.Diagnostics.Errors()); !strings.Contains(got, "0 must be at least 1") {
		t.Errorf("total 0: %q", got)
	}
	for _, tc := range []struct {
		keys []string
		bad  string
	}{
		{[]string{"us", "eu"}, ""},
		{nil, "at least one region"},
		{[]string{"us", "e/u"}, `"e/u" must be`},
	} {
		elems := map[string]types.Object{}
		for _, k := range tc.keys {
			elems[k] = types.ObjectNull(regionType.AttrTypes)
		}
		m, d := types.MapValueFrom(ctx, regionType, elems)
		if d.HasError() {
			t.Fatal(d)
		}
		var resp validator.MapResponse
		regionKeys{}.ValidateMap(ctx, validator.MapRequest{Path: path.Root("regions"), ConfigValue: m}, &resp)
		if got := detail(resp.Diagnostics.Errors()); (tc.bad == "") != (got == "") || !strings.Contains(got, tc.bad) {
			t.Errorf("keys %v: %q, want %q", tc.keys, got, tc.bad)
		}
	}
}

func TestValidateSale(t *testing.T) {
	ctx := context.Background()
	region := func(w, min, max int64) regionModel {
		return regionModel{Weight: types.Int64Value(w), Min: types.Int64Value(min), Max: types.Int64Value(max)}
	}
	sale := func(total int64, starts, ends string, rs map[string]regionModel) saleModel {
		m, _ := types.MapValueFrom(ctx, regionType, rs)
		return saleModel{Total: types.Int64Value(total), StartsAt: types.StringValue(starts), EndsAt: types.StringValue(ends), Regions: m}
	}
	const s, e = "2030-01-01T12:00:00Z", "2030-01-01T13:00:00Z"
	for _, tc := range []struct {
		name string
		m    saleModel
		bad  string
	}{
		{"ok", sale(100, s, e, map[string]regionModel{"us": region(2, 10, 50), "eu": region(1, 0, 0)}), ""},
		{"ends before start", sale(100, e, s, map[string]regionModel{"us": region(1, 0, 0)}), "must be after starts_at"},
		{"max below min", sale(100, s, e, map[string]regionModel{"us": region(1, 20, 10)}), "Region us: max 10 is below min 20"},
		{"minimums above total", sale(30, s, e, map[string]regionModel{"us": region(1, 20, 0), "eu": region(1, 20, 0)}), "minimums sum to 40, above total 30"},
		{"unknown total", saleModel{Total: types.Int64Unknown(), StartsAt: types.StringValue(s), EndsAt: types.StringValue(e), Regions: types.MapUnknown(regionType)}, ""},
	} {
		if got := detail(validateSale(ctx, tc.m).Errors()); (tc.bad == "") != (got == "") || !strings.Contains(got, tc.bad) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.bad)
		}
	}
}

func TestKeepsHowItWasWritten(t *testing.T) {
	at := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	if got := sameInstant(types.StringValue("2030-01-01T13:00:00+01:00"), at); got.ValueString() != "2030-01-01T13:00:00+01:00" {
		t.Errorf("same instant rewritten: %s", got)
	}
	if got := sameInstant(types.StringValue("2030-01-01T13:00:00Z"), at); got.ValueString() != "2030-01-01T12:00:00Z" {
		t.Errorf("a changed time must show as drift: %s", got)
	}
	if got := sameDuration(types.StringValue("300s"), 5*time.Minute); got.ValueString() != "300s" {
		t.Errorf("same duration rewritten: %s", got)
	}
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", 2 * time.Hour: "2h", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func detail(diags diag.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		parts = append(parts, d.Summary()+": "+d.Detail())
	}
	return strings.Join(parts, "; ")
}
