package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// The schema's validators: plan-time checks of single values, each naming
// the bad value and the rule. Checks across attributes are in the
// resource's ValidateConfig.

type validatorString = validator.String

type nameValidator struct{}

func (nameValidator) Description(context.Context) string               { return "a name: " + nameRule }
func (v nameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (nameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if v := req.ConfigValue.ValueString(); !nameRE.MatchString(v) {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid name", fmt.Sprintf("%q must be %s.", v, nameRule))
	}
}

type rfc3339Validator struct{}

func (rfc3339Validator) Description(context.Context) string {
	return "an RFC 3339 time, e.g. 2026-11-24T12:00:00Z"
}
func (v rfc3339Validator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (rfc3339Validator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if _, err := time.Parse(time.RFC3339, req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid time",
			fmt.Sprintf("%q is not an RFC 3339 time such as 2026-11-24T12:00:00Z (timeadd(timestamp(), \"1h\") makes one).", req.ConfigValue.ValueString()))
	}
}

type durationValidator struct{}

func (durationValidator) Description(context.Context) string {
	return "a positive Go duration, e.g. 90s or 5m"
}
func (v durationValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (durationValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if d, err := time.ParseDuration(req.ConfigValue.ValueString()); err != nil || d <= 0 {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid duration",
			fmt.Sprintf("%q is not a positive duration such as 90s or 5m.", req.ConfigValue.ValueString()))
	}
}

type atLeast struct{ min int64 }

func (v atLeast) Description(context.Context) string {
	return fmt.Sprintf("an integer of at least %d", v.min)
}
func (v atLeast) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (v atLeast) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if n := req.ConfigValue.ValueInt64(); n < v.min {
		resp.Diagnostics.AddAttributeError(req.Path, "Value too small", fmt.Sprintf("%d must be at least %d.", n, v.min))
	}
}

// regionKeys checks the names of the regions map and that it is not empty.
type regionKeys struct{}

func (regionKeys) Description(context.Context) string {
	return "at least one region, each named " + nameRule
}
func (v regionKeys) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }
func (regionKeys) ValidateMap(_ context.Context, req validator.MapRequest, resp *validator.MapResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if len(req.ConfigValue.Elements()) == 0 {
		resp.Diagnostics.AddAttributeError(req.Path, "No regions", "A sale needs at least one region.")
	}
	for name := range req.ConfigValue.Elements() {
		if !nameRE.MatchString(name) {
			resp.Diagnostics.AddAttributeError(req.Path.AtMapKey(name), "Invalid region name", fmt.Sprintf("%q must be %s.", name, nameRule))
		}
	}
}
