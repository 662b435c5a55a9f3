package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"flashsale/cmd/flashsale/devstack"
	"flashsale/internal/devtoken"
)

func init() {
	roles["dev"] = role{"everything on one machine: embedded etcd, coordinator, three regions with Redis, agents and sellers, a demo sale", runDev}
}

// runDev is `flashsale dev`, what `make run` starts.
func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	o := devstack.DefaultOptions()
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stdout)
	regions := fs.String("regions", strings.Join(o.Regions, ","), "regions to run, comma-separated")
	fs.StringVar(&o.Dir, "dir", "", "data dir for etcd and Redis (default: a temp dir, removed at exit)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the data dir at exit")
	fs.IntVar(&o.Sellers, "sellers", o.Sellers, "seller servers per region")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", o.GRPCAddr, "coordinator gRPC address")
	fs.StringVar(&o.EtcdAddr, "etcd-addr", o.EtcdAddr, "embedded etcd client address")
	fs.IntVar(&o.HTTPPort, "http-port", o.HTTPPort, "first seller port; sellers take consecutive ports (0: free ports)")
	fs.StringVar(&o.AdminToken, "token", coordEnvOr("FLASHSALE_TOKEN", "dev-admin-token"), "coordinator admin token (env FLASHSALE_TOKEN)")
	fs.StringVar(&o.JWTSecret, "jwt-secret", coordEnvOr("FLASHSALE_JWT_SECRET", "dev-only-jwt-secret-not-for-production"), "HS256 secret of shopper tokens (env FLASHSALE_JWT_SECRET)")
	fs.BoolVar(&o.InsecureDevIdentity, "insecure-dev-identity", false, "accept userId from the request body with no token (INSECURE)")
	fs.Int64Var(&o.DemoTotal, "demo-total", o.DemoTotal, "units of the demo sale (0: no demo sale)")
	fs.DurationVar(&o.DemoStart, "demo-start", o.DemoStart, "the demo sale opens this long after start")
	ha := fs.Bool("ha", false, "run the first region's Redis replicated: a primary, a replica and three sentinels (see -ha-regions)")
	haRegions := fs.String("ha-regions", "", "regions whose Redis runs replicated under Sentinel, comma-separated")
	verbose := fs.Bool("v", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dev: unexpected arguments %q", fs.Args())
	}
	o.Regions = strings.Split(*regions, ",")
	if *haRegions != "" {
		o.HARegions = strings.Split(*haRegions, ",")
	} else if *ha {
		o.HARegions = o.Regions[:1]
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	fmt.Fprintln(stdout, "starting the dev stack (first start of etcd takes a second)...")
	s, err := devstack.Start(ctx, o)
	if err != nil {
		return err
	}
	defer s.Close()
	printEndpoints(stdout, s)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the dev stack...")
	if err := s.Close(); err != nil {
		return err
	}
	if o.Keep {
		fmt.Fprintln(stdout, "data kept in", s.Dir)
	}
	return nil
}

func printEndpoints(w io.Writer, s *devstack.Stack) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nWHAT\tWHERE")
	fmt.Fprintf(tw, "coordinator gRPC\t%s\n", s.Coord.Addr())
	fmt.Fprintf(tw, "etcd (embedded)\t%s\n", s.Etcd.Endpoint)
	for _, r := range s.Regions {
		var urls []string
		for _, srv := range r.Sellers {
			urls = append(urls, "http://"+srv.Addr())
		}
		fmt.Fprintf(tw, "region %s sellers\t%s\n", r.Name, strings.Join(urls, " "))
		if r.HA != nil {
			var nodes []string
			for _, n := range r.HA.Nodes {
				nodes = append(nodes, n.Addr)
			}
			fmt.Fprintf(tw, "region %s redis (Sentinel)\t%s (nodes %s; durability %s)\n", r.Name, r.Conn, strings.Join(nodes, " "), r.Durability)
		} else {
			fmt.Fprintf(tw, "region %s redis\t%s\n", r.Name, r.Conn)
		}
		fmt.Fprintf(tw, "region %s orders (SQL)\t%s\n", r.Name, r.OrdersDSN)
	}
	fmt.Fprintf(tw, "metrics, health\t%s/metrics  /healthz  /readyz  /openapi.yaml\n", s.Regions[0].Endpoint)
	fmt.Fprintf(tw, "data dir\t%s\n", s.Dir)
	tw.Flush()

	r := s.Regions[0]
	tok, _ := devtoken.Sign([]byte(s.Opts.JWTSecret), "alice", r.Name, time.Now(), 24*time.Hour)
	fmt.Fprintf(w, `
Try it (the demo sale "demo" opens %s after start):

  export FLASHSALE_TOKEN=%s FLASHSALE_JWT_SECRET=%s FLASHCTL_ADDR=%s
  go run ./cmd/flashctl status demo --watch
  curl -s -X POST %s/v1/flash-sale/buy -H 'Content-Type: application/json' -H "Authorization: Bearer %s" -d '{"itemId":"demo","requestId":"req-1"}'
  curl -s -X POST %s/v1/flash-sale/buy -H 'Content-Type: application/json' -H "Authorization: Bearer $(go run ./cmd/flashctl token --user bob --region %s)" -d '{"itemId":"demo","requestId":"req-2"}'

Ctrl-C stops everything.
`, s.Opts.DemoStart, s.Opts.AdminToken, s.Opts.JWTSecret, s.Coord.Addr(), r.Endpoint, tok, r.Endpoint, r.Name)
}
