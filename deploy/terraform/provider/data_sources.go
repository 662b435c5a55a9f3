package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"flashsale/coordinator/api"
)

// dataSource is what both data sources share: the provider's client.
type dataSource struct{ c *client }

func (d *dataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	c, ok := req.ProviderData.(*client)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	d.c = c
}

// saleDataSource is data.flashsale_sale: a sale's definition and state,
// for a sale Terraform does not manage (or manages elsewhere).
type saleDataSource struct{ dataSource }

func newSaleDataSource() datasource.DataSource { return &saleDataSource{} }

func (d *saleDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_sale"
}

func (d *saleDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	num := func(desc string) schema.Attribute { return schema.Int64Attribute{Computed: true, Description: desc} }
	str := func(desc string) schema.Attribute { return schema.StringAttribute{Computed: true, Description: desc} }
	resp.Schema = schema.Schema{
		Description: "One sale's definition and run state, as the coordinator holds it.",
		Attributes: map[string]schema.Attribute{
			"id":              schema.StringAttribute{Required: true, Description: "The sale id.", Validators: []validator.String{nameValidator{}}},
			"total":           num("Units for sale in all regions together."),
			"per_user_limit":  num("Units one buyer may hold."),
			"starts_at":       str("Opening time, RFC 3339."),
			"ends_at":         str("Closing time, RFC 3339."),
			"reservation_ttl": str("How long a reservation waits for payment."),
			"state":           str("active, paused or ended."),
			"regions": schema.MapNestedAttribute{
				Computed:    true,
				Description: "The regions, keyed by name.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"weight": num("Share of grants."), "min": num("Minimum units."), "max": num("Maximum units; 0: none."),
				}},
			},
		},
	}
}

func (d *saleDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m saleModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cctx, cancel := d.c.ctx(ctx)
	defer cancel()
	got, err := d.c.api.GetSale(cctx, &api.GetSaleRequest{Id: m.ID.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Cannot read sale "+m.ID.ValueString(), d.c.explain(err))
		return
	}
	resp.Diagnostics.Append(m.fromProto(ctx, got)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// allocationDataSource is data.flashsale_allocation: where a sale's units
// are now, per region, for dashboards and checks (check blocks,
// postconditions).
type allocationDataSource struct{ dataSource }

func newAllocationDataSource() datasource.DataSource { return &allocationDataSource{} }

type allocationModel struct {
	Sale          types.String       `tfsdk:"sale"`
	Total         types.Int64        `tfsdk:"total"`
	Open          types.Bool         `tfsdk:"open"`
	Unallocated   types.Int64        `tfsdk:"unallocated"`
	Granted       types.Int64        `tfsdk:"granted"`
	Released      types.Int64        `tfsdk:"released"`
	Net           types.Int64        `tfsdk:"net"`
	Sold          types.Int64        `tfsdk:"sold"`
	Reserved      types.Int64        `tfsdk:"reserved"`
	AllocRevision types.Int64        `tfsdk:"alloc_revision"`
	Regions       []allocRegionModel `tfsdk:"regions"`
}

type allocRegionModel struct {
	Region        types.String  `tfsdk:"region"`
	Granted       types.Int64   `tfsdk:"granted"`
	Released      types.Int64   `tfsdk:"released"`
	Net           types.Int64   `tfsdk:"net"`
	Sold          types.Int64   `tfsdk:"sold"`
	Reserved      types.Int64   `tfsdk:"reserved"`
	Available     types.Int64   `tfsdk:"available"`
	Demand        types.Float64 `tfsdk:"demand"`
	Reported      types.Bool    `tfsdk:"reported"`
	Fresh         types.Bool    `tfsdk:"fresh"`
	Halted        types.Bool    `tfsdk:"halted"`
	PendingUnits  types.Int64   `tfsdk:"pending_units"`
	PendingTarget types.String  `tfsdk:"pending_to"`
}

func (d *allocationDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_allocation"
}

func (d *allocationDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	num := func(desc string) schema.Attribute { return schema.Int64Attribute{Computed: true, Description: desc} }
	flag := func(desc string) schema.Attribute { return schema.BoolAttribute{Computed: true, Description: desc} }
	resp.Schema = schema.Schema{
		Description: "Where a sale's units are now: the coordinator's per-region counters and each region's latest report.",
		Attributes: map[string]schema.Attribute{
			"sale":           schema.StringAttribute{Required: true, Description: "The sale id.", Validators: []validator.String{nameValidator{}}},
			"total":          num("The sale's total."),
			"open":           flag("Active and between starts_at and ends_at."),
			"unallocated":    num("Units in the pool: total minus the sum of net grants."),
			"granted":        num("Sum of the regions' granted counters."),
			"released":       num("Sum of the regions' released counters."),
			"net":            num("Sum of net grants (never above total)."),
			"sold":           num("Units sold, from the regions' latest reports."),
			"reserved":       num("Units reserved awaiting payment, from the latest reports."),
			"alloc_revision": num("The allocation's etcd revision this was read at."),
			"regions": schema.ListNestedAttribute{
				Computed:    true,
				Description: "Per region, in name order.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"region":        schema.StringAttribute{Computed: true, Description: "Region name."},
					"granted":       num("Cumulative units granted."),
					"released":      num("Cumulative units released (acknowledged)."),
					"net":           num("granted - released."),
					"sold":          num("Units sold (latest report)."),
					"reserved":      num("Units reserved (latest report)."),
					"available":     num("net - sold - reserved."),
					"demand":        schema.Float64Attribute{Computed: true, Description: "Reserve attempts per second (latest report)."},
					"reported":      flag("The region's agent has a live report."),
					"fresh":         flag("The report is younger than the staleness bound."),
					"halted":        flag("The region halted selling (its agent says so)."),
					"pending_units": num("Units of the region's pending release; 0: none."),
					"pending_to":    schema.StringAttribute{Computed: true, Description: "Target region of the pending release; empty: the pool."},
				}},
			},
		},
	}
}

func (d *allocationDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m allocationModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cctx, cancel := d.c.ctx(ctx)
	defer cancel()
	st, err := d.c.api.SaleStatus(cctx, &api.SaleRef{Id: m.Sale.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Cannot read the allocation of sale "+m.Sale.ValueString(), d.c.explain(err))
		return
	}
	t := st.GetTotals()
	m.Total = types.Int64Value(st.GetSale().GetTotal())
	m.Open = types.BoolValue(st.Open)
	m.Unallocated = types.Int64Value(st.Unallocated)
	m.Granted, m.Released, m.Net = types.Int64Value(t.GetGranted()), types.Int64Value(t.GetReleased()), types.Int64Value(t.GetNet())
	m.Sold, m.Reserved = types.Int64Value(t.GetSold()), types.Int64Value(t.GetReserved())
	m.AllocRevision = types.Int64Value(st.AllocRevision)
	m.Regions = nil
	for _, r := range st.Regions {
		m.Regions = append(m.Regions, allocRegionModel{
			Region: types.StringValue(r.Region), Granted: types.Int64Value(r.Granted), Released: types.Int64Value(r.Released),
			Net: types.Int64Value(r.Net), Sold: types.Int64Value(r.Sold), Reserved: types.Int64Value(r.Reserved),
			Available: types.Int64Value(r.Available), Demand: types.Float64Value(r.Demand),
			Reported: types.BoolValue(r.Reported), Fresh: types.BoolValue(r.Fresh), Halted: types.BoolValue(r.Halted),
			PendingUnits: types.Int64Value(r.PendingUnits), PendingTarget: types.StringValue(r.PendingTo),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}
