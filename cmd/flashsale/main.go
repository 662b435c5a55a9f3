// Command flashsale is the flash-sale server. One binary, one role per
// process, chosen by the first argument:
//
//	flashsale regional    -config regional.yaml   a region's seller (shopper HTTP API)
//	flashsale coordinator -etcd host:2379          the global coordinator
//	flashsale dev                                  everything on one machine
//
// `flashsale <role> -h` lists a role's flags.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flashsale:", err)
		os.Exit(1)
	}
}

// role is one subcommand. run must return when ctx ends (SIGINT/SIGTERM),
// after a graceful shutdown.
type role struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

// roles is the dispatch table. A role in its own file (dev.go) may add
// itself from an init function: roles["dev"] = role{...}.
var roles = map[string]role{
	"regional":    {"a region's seller: the shopper HTTP API over the region's Redis", runRegional},
	"coordinator": {"the global coordinator: quota allocation on etcd, gRPC admin API", runCoordinator},
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return fmt.Errorf("no role given: want one of %s", strings.Join(roleNames(), ", "))
		}
		return nil
	}
	r, ok := roles[args[0]]
	if !ok {
		return fmt.Errorf("unknown role %q: want one of %s", args[0], strings.Join(roleNames(), ", "))
	}
	return r.run(ctx, args[1:], stdout)
}

func roleNames() []string {
	names := make([]string, 0, len(roles))
	for n := range roles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: flashsale <role> [flags]   (flashsale <role> -h for a role's flags)")
	fmt.Fprintln(w, "roles:")
	for _, n := range roleNames() {
		fmt.Fprintf(w, "  %-12s %s\n", n, roles[n].summary)
	}
}
