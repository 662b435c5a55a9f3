package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"flashsale/coordinator"
	"flashsale/internal/etcdembed"
)

// runCoordinator is the `flashsale coordinator` role: one coordinator
// process (several may run; one leads), its gRPC API and its metrics.
func runCoordinator(ctx context.Context, args []string, stdout io.Writer) error {
	cfg := coordinator.DefaultConfig()
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stdout)
	endpoints := fs.String("etcd", coordEnvOr("FLASHSALE_ETCD", "127.0.0.1:2379"), "etcd endpoints, comma-separated (env FLASHSALE_ETCD)")
	embedded := fs.String("embedded-etcd", "", "run an embedded single-member etcd with its data in `DIR` instead of dialling --etcd (dev)")
	embeddedAddr := fs.String("embedded-etcd-addr", "127.0.0.1:2379", "client address of the embedded etcd (port 0 picks one)")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "etcd key prefix")
	fs.StringVar(&cfg.ListenAddr, "grpc-addr", cfg.ListenAddr, "gRPC listen address")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "gRPC address other coordinators report for this one (default: the listen address)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9400", "HTTP address for /metrics and /healthz (empty: off)")
	fs.StringVar(&cfg.Token, "token", os.Getenv("FLASHSALE_TOKEN"), "bearer token admin calls must carry (env FLASHSALE_TOKEN)")
	fs.BoolVar(&cfg.InsecureNoAuth, "insecure-no-auth", false, "serve the admin API without a token (dev only)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "rebalance loop period")
	fs.IntVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "leader lease TTL in seconds")
	fs.DurationVar(&cfg.ReportStale, "report-stale", cfg.ReportStale, "age after which a region report is stale")
	fs.DurationVar(&cfg.LearningGrace, "learning-grace", cfg.LearningGrace, "longest a new leader waits for fresh reports before granting")
	fs.DurationVar(&cfg.SplitLead, "split-lead", cfg.SplitLead, "how long before a sale opens the initial split is made")
	fs.DurationVar(&cfg.DemandLag, "demand-lag", cfg.DemandLag, "how long after a sale opens a region reporting no demand is not yet taken for idle")
	fs.Int64Var(&cfg.Policy.SplitPercent, "split-percent", cfg.Policy.SplitPercent, "share of a new sale's stock the initial split grants; the rest follows demand")
	fs.Int64Var(&cfg.Policy.HorizonMs, "horizon-ms", cfg.Policy.HorizonMs, "a region should hold this many milliseconds of its recent demand")
	fs.Int64Var(&cfg.Policy.MinKeep, "min-keep", cfg.Policy.MinKeep, "units an idle region keeps for late buyers")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("coordinator: unexpected arguments %q", fs.Args())
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if cfg.InsecureNoAuth {
		cfg.Logger.Warn("INSECURE: the admin API accepts calls without a token")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	eps := strings.Split(*endpoints, ",")
	if *embedded != "" {
		e, err := etcdembed.Start(*embedded, *embeddedAddr)
		if err != nil {
			return err
		}
		defer e.Close()
		eps = []string{e.Endpoint}
		cfg.Logger.Warn("using embedded etcd (dev mode)", "dir", *embedded, "endpoint", e.Endpoint)
	}
	// The client's own zap logs repeat what the coordinator logs with slog.
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client %v: %w", eps, err)
	}
	defer cli.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c, err := coordinator.New(cfg, cli, reg)
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	defer c.Close()

	var hs *http.Server
	if *metricsAddr != "" {
		lis, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listen %s: %w", *metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				cfg.Logger.Error("metrics server", "err", err)
			}
		}()
		*metricsAddr = lis.Addr().String()
	}
	fmt.Fprintf(stdout, "coordinator grpc=%s metrics=%s etcd=%s\n", c.Addr(), *metricsAddr, strings.Join(eps, ","))

	<-ctx.Done()
	cfg.Logger.Info("coordinator shutting down")
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}
	return c.Close()
}

func coordEnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
