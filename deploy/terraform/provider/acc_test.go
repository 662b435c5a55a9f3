package provider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"flashsale/coordinator"
	"flashsale/coordinator/api"
	"flashsale/deploy/terraform/provider"
	"flashsale/internal/etcdtest"
	"flashsale/quota"
	"flashsale/quota/layout"
)

const accToken = "tf-acc-token"

// accEnv is a real coordinator on a real embedded etcd, and what the
// steps need to act as an operator or a region beside Terraform.
type accEnv struct {
	t    *testing.T
	addr string
	api  api.CoordinatorClient
	cli  *clientv3.Client
}

// startAcc skips unless TF_ACC is set (these tests run the terraform
// binary: `make tf-test`), then starts etcd and a leading coordinator.
func startAcc(t *testing.T) *accEnv {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: set TF_ACC=1 (make tf-test)")
	}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		// Without a path, terraform-plugin-testing downloads one.
		p, err := exec.LookPath("terraform")
		if err != nil {
			t.Fatal("terraform is not on PATH and TF_ACC_TERRAFORM_PATH is unset: these machines ship terraform at /usr/local/bin/terraform")
		}
		t.Setenv("TF_ACC_TERRAFORM_PATH", p)
	}
	// The reattached provider's address is registry.terraform.io/<namespace>/flashsale.
	t.Setenv("TF_ACC_PROVIDER_NAMESPACE", "flashsale")
	t.Setenv("CHECKPOINT_DISABLE", "1")
	empty := filepath.Join(t.TempDir(), "empty.tfrc")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", empty)

	e := etcdtest.Start(t)
	cfg := coordinator.DevConfig()
	cfg.Token = accToken
	cfg.Policy.MinKeep = 1 << 40 // no releases the test did not ask for
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := coordinator.New(cfg, etcdtest.Client(t, e), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for deadline := time.Now().Add(20 * time.Second); !c.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("coordinator never became leader")
		}
	}
	cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	t.Setenv("FLASHSALE_ADDR", c.Addr())
	t.Setenv("FLASHSALE_TOKEN", accToken)
	return &accEnv{t: t, addr: c.Addr(), api: api.NewCoordinatorClient(cc), cli: etcdtest.Client(t, e)}
}

func (e *accEnv) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+accToken)
}

func factories() map[string]func() (tfprotov6.ProviderServer, error) {
	return map[string]func() (tfprotov6.ProviderServer, error){
		"flashsale": providerserver.NewProtocol6WithError(provider.New("test")()),
	}
}

// report writes a region's report as its agent would.
func (e *accEnv) report(region, sale string, rep quota.Report) {
	e.t.Helper()
	rep.At = time.Now().UnixMilli()
	b, _ := json.Marshal(layout.RegionReport{Report: rep, Region: region, Sale: sale})
	if _, err := e.cli.Put(context.Background(), layout.Keys{Prefix: layout.DefaultPrefix}.Report(region, sale), string(b)); err != nil {
		e.t.Fatal(err)
	}
}

// saleIs checks the coordinator's copy of a sale, not Terraform's.
func (e *accEnv) saleIs(id string, check func(s *api.Sale) error) resource.TestCheckFunc {
	return func(*terraform.State) error {
		s, err := e.api.GetSale(e.ctx(), &api.GetSaleRequest{Id: id})
		if err != nil {
			return err
		}
		return check(s)
	}
}

type saleCfg struct {
	id           string
	total        int64
	perUser      int64
	euWeight     int64
	withAp       bool
	starts, ends time.Time
}

func (s saleCfg) hcl() string {
	ap := ""
	if s.withAp {
		ap = "ap = {}"
	}
	return fmt.Sprintf(`
terraform {
  required_providers {
    flashsale = { source = "flashsale/flashsale" }
  }
}

resource "flashsale_sale" "s" {
  id             = %q
  total          = %d
  per_user_limit = %d
  starts_at      = %q
  ends_at        = %q
  regions = {
    us = { weight = 2 }
    eu = { weight = %d, max = 900 }
    %s
  }
}

data "flashsale_sale" "s" { id = flashsale_sale.s.id }
data "flashsale_allocation" "s" { sale = flashsale_sale.s.id }
`, s.id, s.total, s.perUser, s.starts.Format(time.RFC3339), s.ends.Format(time.RFC3339), s.euWeight, ap)
}

// TestAccSale walks one sale through its life with the real terraform
// binary: create, no diff on a second plan, an operator's pause that is
// not drift, update, drift made with the API, refused updates (a total
// below what is sold and reserved, what needs a new id), import, a new id
// (the old sale ended, the new one created), destroy (ended).
func TestAccSale(t *testing.T) {
	e := startAcc(t)
	now := time.Now().UTC().Truncate(time.Second)
	base := saleCfg{id: "tf1", total: 1000, perUser: 1, euWeight: 1, starts: now.Add(-time.Minute), ends: now.Add(2 * time.Hour)}
	updated := base
	updated.total, updated.euWeight, updated.ends = 1500, 3, now.Add(3*time.Hour)
	lowered, perUser, moreRegions, renamed := updated, updated, updated, updated
	lowered.total = 300
	perUser.perUser = 2
	moreRegions.withAp = true
	renamed.id, renamed.perUser = "tf1-2", 2

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy: func(*terraform.State) error {
			for _, id := range []string{"tf1", "tf1-2"} {
				s, err := e.api.GetSale(e.ctx(), &api.GetSaleRequest{Id: id})
				if err != nil {
					return err
				}
				if s.State != "ended" {
					return fmt.Errorf("sale %s is %s after destroy, want ended", id, s.State)
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: base.hcl(),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flashsale_sale.s", "total", "1000"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "state", "active"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "reservation_ttl", "10m"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "regions.us.weight", "2"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "regions.eu.min", "0"),
					resource.TestCheckResourceAttr("data.flashsale_sale.s", "total", "1000"),
					resource.TestCheckResourceAttr("data.flashsale_sale.s", "regions.eu.max", "900"),
					resource.TestCheckResourceAttr("data.flashsale_allocation.s", "total", "1000"),
					resource.TestCheckResourceAttr("data.flashsale_allocation.s", "regions.#", "2"),
					e.saleIs("tf1", func(s *api.Sale) error {
						if s.Total != 1000 || len(s.Regions) != 2 {
							return fmt.Errorf("coordinator holds %v", s)
						}
						return nil
					}),
				),
			},
			{Config: base.hcl(), PlanOnly: true}, // a second plan shows nothing
			{
				// An operator pauses the sale: run state, not drift.
				PreConfig: func() {
					if _, err := e.api.PauseSale(e.ctx(), &api.SaleRef{Id: "tf1"}); err != nil {
						t.Fatal(err)
					}
				},
				Config:   base.hcl(),
				PlanOnly: true,
			},
			{
				Config: updated.hcl(),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flashsale_sale.s", "total", "1500"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "state", "paused"),
					resource.TestCheckResourceAttr("data.flashsale_allocation.s", "total", "1500"),
					e.saleIs("tf1", func(s *api.Sale) error {
						if s.Total != 1500 || !s.EndsAt.AsTime().Equal(updated.ends) || s.State != "paused" {
							return fmt.Errorf("coordinator holds %v", s)
						}
						for _, r := range s.Regions {
							if r.Name == "eu" && r.Weight != 3 {
								return fmt.Errorf("eu weight %d, want 3", r.Weight)
							}
						}
						return nil
					}),
				),
			},
			{
				// Drift: someone raises the total with flashctl; the plan shows it.
				PreConfig: func() {
					s, err := e.api.GetSale(e.ctx(), &api.GetSaleRequest{Id: "tf1"})
					if err != nil {
						t.Fatal(err)
					}
					s.Total = 1700
					if _, err := e.api.UpdateSale(e.ctx(), &api.UpdateSaleRequest{Sale: s}); err != nil {
						t.Fatal(err)
					}
				},
				Config:             updated.hcl(),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
			{
				// Applying puts it back (a lowering within the pool).
				Config: updated.hcl(),
				Check: e.saleIs("tf1", func(s *api.Sale) error {
					if s.Total != 1500 {
						return fmt.Errorf("total %d, want 1500 back", s.Total)
					}
					return nil
				}),
			},
			{
				// The regions sold 600 and hold 20 reserved: 300 is refused
				// at plan, naming the numbers.
				PreConfig: func() {
					e.report("us", "tf1", quota.Report{Sold: 500, Reserved: 20})
					e.report("eu", "tf1", quota.Report{Sold: 100})
				},
				Config:      lowered.hcl(),
				ExpectError: regexp.MustCompile(`total 300 is below the 620 units[\s\S]*600 sold, 20 reserved[\s\S]*lowest total now is 620`),
			},
			{Config: perUser.hcl(), ExpectError: regexp.MustCompile(`per_user_limit cannot change in place[\s\S]*change id as well`)},
			{Config: moreRegions.hcl(), ExpectError: regexp.MustCompile(`The set of regions cannot change in place`)},
			{
				ResourceName:      "flashsale_sale.s",
				ImportState:       true,
				ImportStateId:     "tf1",
				ImportStateVerify: true,
			},
			{
				// A new id: the old sale ends, the new one is created.
				Config: renamed.hcl(),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flashsale_sale.s", "id", "tf1-2"),
					resource.TestCheckResourceAttr("flashsale_sale.s", "per_user_limit", "2"),
					e.saleIs("tf1", func(s *api.Sale) error {
						if s.State != "ended" {
							return fmt.Errorf("replaced sale tf1 is %s, want ended", s.State)
						}
						return nil
					}),
				),
			},
		},
	})
}
