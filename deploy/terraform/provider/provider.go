package provider

import (
	"context"
	"os"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// Address is the provider's source address; configurations name it as
// source = "flashsale/flashsale".
const Address = "registry.terraform.io/flashsale/flashsale"

// Defaults when neither the provider block nor the environment says.
const (
	defaultAddr    = "127.0.0.1:7400"
	defaultTimeout = 30 * time.Second
)

// New returns the provider; version is the binary's.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &flashsaleProvider{version: version} }
}

type flashsaleProvider struct{ version string }

type providerModel struct {
	Address types.String `tfsdk:"address"`
	Token   types.String `tfsdk:"token"`
	Timeout types.String `tfsdk:"timeout"`
}

func (p *flashsaleProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "flashsale"
	resp.Version = p.version
}

func (p *flashsaleProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Flash sales on a flashsale coordinator, over its gRPC admin API.",
		Attributes: map[string]schema.Attribute{
			"address": schema.StringAttribute{
				Optional:    true,
				Description: "The coordinator's gRPC address, host:port (default: env FLASHSALE_ADDR, then FLASHCTL_ADDR, then " + defaultAddr + "). Any coordinator will do for reads; writes go to the leader.",
			},
			"token": schema.StringAttribute{
				Optional:    true,
				Sensitive:   true,
				Description: "The coordinator's admin bearer token (default: env FLASHSALE_TOKEN).",
			},
			"timeout": schema.StringAttribute{
				Optional:    true,
				Description: "Deadline of each call to the coordinator, a Go duration (default 30s). A lowered total waits up to 10s of it for the regions' releases.",
				Validators:  []validatorString{durationValidator{}},
			},
		},
	}
}

func (p *flashsaleProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if m.Address.IsUnknown() || m.Token.IsUnknown() || m.Timeout.IsUnknown() {
		// Known only after apply (from another resource): configure then.
		return
	}
	addr := firstOf(m.Address.ValueString(), os.Getenv("FLASHSALE_ADDR"), os.Getenv("FLASHCTL_ADDR"), defaultAddr)
	token := firstOf(m.Token.ValueString(), os.Getenv("FLASHSALE_TOKEN"))
	if token == "" {
		resp.Diagnostics.AddAttributeError(path.Root("token"), "Missing coordinator token",
			"Set token in the provider block or FLASHSALE_TOKEN in the environment to the coordinator's admin token (`make run` prints the dev one).")
		return
	}
	timeout := defaultTimeout
	if v := m.Timeout.ValueString(); v != "" {
		timeout, _ = time.ParseDuration(v) // validated by the schema
	}
	c, err := newClient(addr, token, timeout)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("address"), "Invalid coordinator address", err.Error())
		return
	}
	resp.ResourceData = c
	resp.DataSourceData = c
}

func (p *flashsaleProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{newSaleResource}
}

func (p *flashsaleProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{newSaleDataSource, newAllocationDataSource}
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
