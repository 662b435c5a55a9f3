package provider_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flashsale/coordinator/api"
)

// TestAccSaleModule is the quick start (deploy/terraform/README.md) run by
// a test: scripts/cliconfig.sh builds the provider and writes the CLI
// configuration, and the terraform binary applies modules/sale under
// dev_overrides (no init) against a real coordinator. The sale exists on
// the coordinator, a second plan is empty, destroy ends the sale.
func TestAccSaleModule(t *testing.T) {
	e := startAcc(t)
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	tfdir := t.TempDir()
	if out, err := exec.Command(filepath.Join(root, "deploy/terraform/scripts/cliconfig.sh"), tfdir).CombinedOutput(); err != nil {
		t.Fatalf("cliconfig.sh: %v\n%s", err, out)
	}
	work := t.TempDir()
	now := time.Now().UTC().Truncate(time.Second)
	main := fmt.Sprintf(`
module "sale" {
  source    = %q
  id        = "launch"
  total     = 500
  starts_at = %q
  ends_at   = %q
  regions   = { us = { weight = 2 }, eu = {} }
}

output "unallocated" { value = module.sale.unallocated }
`, filepath.Join(root, "deploy/terraform/modules/sale"), now.Add(time.Hour).Format(time.RFC3339), now.Add(2*time.Hour).Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	tf := func(args ...string) (string, error) {
		cmd := exec.Command(os.Getenv("TF_ACC_TERRAFORM_PATH"), append([]string{"-chdir=" + work}, args...)...)
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+filepath.Join(tfdir, "dev.tfrc"), "TF_IN_AUTOMATION=1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := tf(args...)
		if err != nil {
			t.Fatalf("terraform %v: %v\n%s", args, err, out)
		}
		return out
	}
	must("get")
	must("apply", "-auto-approve", "-no-color")
	s, err := e.api.GetSale(e.ctx(), &api.GetSaleRequest{Id: "launch"})
	if err != nil || s.Total != 500 || len(s.Regions) != 2 || s.State != "active" {
		t.Fatalf("after apply the coordinator holds %v (%v)", s, err)
	}
	// It opens in an hour: no split yet (which would change the output
	// between apply and the second plan).
	if out := must("output", "-raw", "unallocated"); out != "500" {
		t.Errorf("output unallocated = %q, want 500 (nothing granted before the split)", out)
	}
	if out, err := tf("plan", "-detailed-exitcode", "-no-color"); err != nil {
		t.Fatalf("second plan not empty (%v):\n%s", err, out)
	}
	must("destroy", "-auto-approve", "-no-color")
	if s, err := e.api.GetSale(e.ctx(), &api.GetSaleRequest{Id: "launch"}); err != nil || s.State != "ended" {
		t.Fatalf("after destroy: %v (%v), want ended", s, err)
	}
	if out, _ := tf("apply", "-auto-approve", "-no-color"); !strings.Contains(out, "never reused") {
		t.Fatalf("re-creating an ended sale's id should say ids are never reused:\n%s", out)
	}
}
