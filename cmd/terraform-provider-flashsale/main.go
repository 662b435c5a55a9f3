// Command terraform-provider-flashsale is the Terraform provider for
// flash sales (deploy/terraform/provider). Terraform starts it; run it
// yourself only with -debug, to attach a debugger.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"flashsale/deploy/terraform/provider"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run for a debugger: prints TF_REATTACH_PROVIDERS to set for terraform")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: provider.Address,
		Debug:   *debug,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-flashsale:", err)
		os.Exit(1)
	}
}
