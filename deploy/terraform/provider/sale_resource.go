package provider

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"flashsale/coordinator/api"
)

var (
	_ resource.ResourceWithConfigure      = (*saleResource)(nil)
	_ resource.ResourceWithImportState    = (*saleResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*saleResource)(nil)
	_ resource.ResourceWithValidateConfig = (*saleResource)(nil)
)

// saleResource is flashsale_sale: a sale's definition. What the coordinator
// can change in place (total, region weights and bounds, window,
// reservation TTL) is an update; what it cannot (regions, per-user limit)
// needs a new id, since sale ids are never reused: the plan says so rather
// than planning a delete-then-create that would fail.
type saleResource struct {
	c   *client
	now func() time.Time
}

func newSaleResource() resource.Resource { return &saleResource{now: time.Now} }

func (r *saleResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sale"
}

func (r *saleResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A flash sale's definition. Destroying it ends the sale (its orders stay). An operator's pause, resume or drain is run state, not drift.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Required:      true,
				Description:   "The sale id (" + nameRule + "). Ids are never reused, even after a sale ends: a new id means a new sale.",
				Validators:    []validator.String{nameValidator{}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"total": schema.Int64Attribute{
				Required:    true,
				Description: "Units for sale in all regions together. Raising it adds units to the pool the rebalancer grants from; lowering it takes them back through the regions' releases and is refused below what is sold or reserved.",
				Validators:  []validator.Int64{atLeast{1}},
			},
			"per_user_limit": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(1),
				Description: "Units one buyer may hold across regions (default 1). Cannot change in place: change the id too.",
				Validators:  []validator.Int64{atLeast{1}},
			},
			"starts_at": schema.StringAttribute{
				Required:    true,
				Description: "Opening time, RFC 3339 (write it in UTC, ...Z, for a clean import). Can change only before the sale opens.",
				Validators:  []validator.String{rfc3339Validator{}},
			},
			"ends_at": schema.StringAttribute{
				Required:    true,
				Description: "Closing time, RFC 3339, after starts_at and in the future when set.",
				Validators:  []validator.String{rfc3339Validator{}},
			},
			"reservation_ttl": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString("10m"),
				Description: "How long a reservation waits for payment, a Go duration (default 10m).",
				Validators:  []validator.String{durationValidator{}},
			},
			"regions": schema.MapNestedAttribute{
				Required:    true,
				Description: "The regions selling, keyed by region name. Weights and bounds change in place; the set of regions cannot (change the id too).",
				Validators:  []validator.Map{regionKeys{}},
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"weight": schema.Int64Attribute{
						Optional: true, Computed: true, Default: int64default.StaticInt64(1),
						Description: "Share of the initial split and of grants (default 1). A drained region stays drained whatever its weight says.",
						Validators:  []validator.Int64{atLeast{1}},
					},
					"min": schema.Int64Attribute{
						Optional: true, Computed: true, Default: int64default.StaticInt64(0),
						Description: "Units the planners keep the region at least (default 0).",
						Validators:  []validator.Int64{atLeast{0}},
					},
					"max": schema.Int64Attribute{
						Optional: true, Computed: true, Default: int64default.StaticInt64(0),
						Description: "Most units the planners grant the region; 0: no maximum.",
						Validators:  []validator.Int64{atLeast{0}},
					},
				}},
			},
			"state": schema.StringAttribute{
				Computed:      true,
				Description:   "Run state as the coordinator reports it: active, paused or ended. Read only: operators pause and resume with flashctl.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *saleResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	c, ok := req.ProviderData.(*client)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	r.c = c
}

// ValidateConfig checks what spans attributes: the window's order, each
// region's bounds, and the minimums against the total.
func (r *saleResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m saleModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(validateSale(ctx, m)...)
}

func validateSale(ctx context.Context, m saleModel) diag.Diagnostics {
	var diags diag.Diagnostics
	if !m.StartsAt.IsUnknown() && !m.EndsAt.IsUnknown() {
		s, err1 := time.Parse(time.RFC3339, m.StartsAt.ValueString())
		e, err2 := time.Parse(time.RFC3339, m.EndsAt.ValueString())
		if err1 == nil && err2 == nil && !e.After(s) {
			diags.AddAttributeError(path.Root("ends_at"), "Sale ends before it starts",
				fmt.Sprintf("ends_at %s must be after starts_at %s.", m.EndsAt.ValueString(), m.StartsAt.ValueString()))
		}
	}
	rs, d := regions(ctx, m.Regions)
	diags.Append(d...)
	var sumMin int64
	minsKnown := true
	for name, reg := range rs {
		if reg.Min.IsUnknown() {
			minsKnown = false
		}
		sumMin += reg.Min.ValueInt64()
		if mx, mn := reg.Max.ValueInt64(), reg.Min.ValueInt64(); mx > 0 && mx < mn {
			diags.AddAttributeError(path.Root("regions").AtMapKey(name).AtName("max"), "Region max below its min",
				fmt.Sprintf("Region %s: max %d is below min %d (0 means no maximum).", name, mx, mn))
		}
	}
	if minsKnown && !m.Total.IsUnknown() && !m.Total.IsNull() && sumMin > m.Total.ValueInt64() {
		diags.AddAttributeError(path.Root("regions"), "Region minimums above the total",
			fmt.Sprintf("The regions' minimums sum to %d, above total %d.", sumMin, m.Total.ValueInt64()))
	}
	return diags
}

// ModifyPlan refuses, at plan time, what the coordinator would refuse at
// apply: an in-place change of what needs a new id, a change to an ended
// sale, a new start once the sale has opened, an end in the past, and a
// total below what the regions hold now (the coordinator checks again at
// apply, as sales go on in between).
func (r *saleResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy: ends the sale
	}
	var plan saleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	now := r.now()
	if req.State.Raw.IsNull() {
		if e, err := time.Parse(time.RFC3339, plan.EndsAt.ValueString()); err == nil && !e.After(now) {
			resp.Diagnostics.AddAttributeError(path.Root("ends_at"), "Sale would end in the past",
				fmt.Sprintf("ends_at %s is not in the future.", plan.EndsAt.ValueString()))
		}
		return
	}
	var st saleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() || plan.ID.ValueString() != st.ID.ValueString() || plan.ID.IsUnknown() {
		return // a new id: replaced, whatever else changes
	}
	id := st.ID.ValueString()
	newID := fmt.Sprintf("Sale ids are never reused, so this needs a new sale: change id as well (for example %q). Terraform then ends sale %q and creates the new one.", id+"-2", id)
	if !plan.PerUserLimit.IsUnknown() && plan.PerUserLimit.ValueInt64() != st.PerUserLimit.ValueInt64() {
		resp.Diagnostics.AddAttributeError(path.Root("per_user_limit"), "per_user_limit cannot change in place",
			fmt.Sprintf("Sale %s sells under a per-user limit of %d; buyers have bought under it. %s", id, st.PerUserLimit.ValueInt64(), newID))
	}
	if !plan.Regions.IsUnknown() {
		have, want := mapKeys(st.Regions), mapKeys(plan.Regions)
		if !slices.Equal(have, want) {
			resp.Diagnostics.AddAttributeError(path.Root("regions"), "The set of regions cannot change in place",
				fmt.Sprintf("Sale %s sells in %v; the configuration asks for %v. %s", id, have, want, newID))
		}
	}
	if resp.Diagnostics.HasError() {
		return
	}
	changed := !plan.Total.Equal(st.Total) || !plan.StartsAt.Equal(st.StartsAt) || !plan.EndsAt.Equal(st.EndsAt) ||
		!plan.ReservationTTL.Equal(st.ReservationTTL) || !plan.Regions.Equal(st.Regions)
	if !changed {
		return
	}
	if st.State.ValueString() == "ended" {
		resp.Diagnostics.AddError("Sale has ended",
			fmt.Sprintf("Sale %s has ended (by an operator or at its ends_at) and cannot change. %s", id, newID))
		return
	}
	if s, err := time.Parse(time.RFC3339, st.StartsAt.ValueString()); err == nil && !plan.StartsAt.IsUnknown() && !sameTime(plan.StartsAt, s) && !now.Before(s) {
		resp.Diagnostics.AddAttributeError(path.Root("starts_at"), "starts_at cannot change after the sale opened",
			fmt.Sprintf("Sale %s opened at %s; its start can no longer change.", id, st.StartsAt.ValueString()))
	}
	if e, err := time.Parse(time.RFC3339, plan.EndsAt.ValueString()); err == nil && !plan.EndsAt.Equal(st.EndsAt) && !e.After(now) {
		resp.Diagnostics.AddAttributeError(path.Root("ends_at"), "Sale would end in the past",
			fmt.Sprintf("ends_at %s is not in the future.", plan.EndsAt.ValueString()))
	}
	if r.c == nil || plan.Total.IsUnknown() || plan.Total.ValueInt64() >= st.Total.ValueInt64() {
		return
	}
	ctx, cancel := r.c.ctx(ctx)
	defer cancel()
	sst, err := r.c.api.SaleStatus(ctx, &api.SaleRef{Id: id})
	if err != nil {
		return // Read reports an unreachable coordinator; apply checks again
	}
	to := plan.Total.ValueInt64()
	sold, reserved, silent := held(sst)
	switch {
	case to < sold+reserved+silent:
		resp.Diagnostics.AddAttributeError(path.Root("total"), "Total below what is sold and reserved",
			fmt.Sprintf("Sale %s cannot go from %d to %d: %s.", id, st.Total.ValueInt64(), to, describeHeld(to, sst)))
	case to < sst.Totals.GetNet():
		resp.Diagnostics.AddAttributeWarning(path.Root("total"), "Lowering the total needs releases",
			fmt.Sprintf("The regions of sale %s hold %d units net; lowering the total to %d asks them to release %d unsold units first, and apply waits for that.",
				id, sst.Totals.GetNet(), to, sst.Totals.GetNet()-to))
	}
}

func sameTime(v types.String, t time.Time) bool {
	p, err := time.Parse(time.RFC3339, v.ValueString())
	return err == nil && p.Equal(t)
}

func mapKeys(m types.Map) []string {
	keys := make([]string, 0, len(m.Elements()))
	for k := range m.Elements() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (r *saleResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan saleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, diags := plan.toProto(ctx)
	if resp.Diagnostics.Append(diags...); diags.HasError() {
		return
	}
	cctx, cancel := r.c.ctx(ctx)
	defer cancel()
	got, err := r.c.api.CreateSale(cctx, &api.CreateSaleRequest{Sale: s})
	if status.Code(err) == codes.AlreadyExists {
		resp.Diagnostics.AddAttributeError(path.Root("id"), "Sale id already taken",
			fmt.Sprintf("A sale %q exists on the coordinator. Sale ids are never reused, even after a sale ends: choose a new id, or bring the sale under Terraform with `terraform import <address> %s`.", s.Id, s.Id))
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot create sale "+s.Id, r.c.explain(err))
		return
	}
	resp.Diagnostics.Append(plan.fromProto(ctx, got)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *saleResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var st saleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cctx, cancel := r.c.ctx(ctx)
	defer cancel()
	got, err := r.c.api.GetSale(cctx, &api.GetSaleRequest{Id: st.ID.ValueString()})
	if status.Code(err) == codes.NotFound {
		// Sales are never deleted: this coordinator (or etcd prefix) is
		// not the one the state was made on.
		resp.Diagnostics.AddWarning("Sale not found",
			fmt.Sprintf("The coordinator has no sale %q; it is dropped from the state. Sales are never deleted, so the provider may point at another coordinator than before.", st.ID.ValueString()))
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read sale "+st.ID.ValueString(), r.c.explain(err))
		return
	}
	resp.Diagnostics.Append(st.fromProto(ctx, got)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, st)...)
}

func (r *saleResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan saleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, diags := plan.toProto(ctx)
	if resp.Diagnostics.Append(diags...); diags.HasError() {
		return
	}
	cctx, cancel := r.c.ctx(ctx)
	defer cancel()
	got, err := r.c.api.UpdateSale(cctx, &api.UpdateSaleRequest{Sale: s})
	if err != nil {
		summary := "Cannot update sale " + s.Id
		if st, ok := status.FromError(err); ok && st.Code() == codes.Aborted {
			summary = "Sale " + s.Id + " not updated yet"
		}
		resp.Diagnostics.AddError(summary, r.c.explain(err))
		return
	}
	resp.Diagnostics.Append(plan.fromProto(ctx, got)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// Delete ends the sale: the coordinator sweeps its leftovers, the regions
// stop selling, and every order stays. The id stays taken.
func (r *saleResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var st saleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cctx, cancel := r.c.ctx(ctx)
	defer cancel()
	_, err := r.c.api.EndSale(cctx, &api.SaleRef{Id: st.ID.ValueString()})
	if err != nil && status.Code(err) != codes.NotFound {
		resp.Diagnostics.AddError("Cannot end sale "+st.ID.ValueString(), r.c.explain(err))
	}
}

func (r *saleResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !nameRE.MatchString(req.ID) {
		resp.Diagnostics.AddError("Invalid sale id", fmt.Sprintf("%q must be %s.", req.ID, nameRule))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
