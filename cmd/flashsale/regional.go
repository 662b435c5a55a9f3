package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"flashsale/quota/layout"
	"flashsale/regional"
	"flashsale/regional/agent"
	"flashsale/regional/gossip"
	"flashsale/regional/orders"
	"flashsale/regional/payment"
	"flashsale/regional/redisstore"
)

// Environment variables of the regional role. They override the config
// file; flags override them.
const (
	envConfig       = "FLASHSALE_CONFIG"
	envRegion       = "FLASHSALE_REGION"
	envListen       = "FLASHSALE_LISTEN"
	envRedis        = "FLASHSALE_REDIS"
	envRedisPass    = "FLASHSALE_REDIS_PASSWORD"
	envJWTSecret    = "FLASHSALE_JWT_HS256_SECRET"
	envJWTPublicKey = "FLASHSALE_JWT_ED25519_PUBLIC_KEY"
	envPayment      = "FLASHSALE_PAYMENT"
	envOrdersDSN    = "FLASHSALE_ORDERS_DSN"
)

// runRegional is the `flashsale regional` role: one seller of one region.
// Settings come from the preset, then the config file, then the
// environment, then flags.
func runRegional(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("regional", flag.ContinueOnError)
	fs.SetOutput(stdout)
	configPath := fs.String("config", os.Getenv(envConfig), "config `file` (YAML or JSON; env "+envConfig+")")
	dev := fs.Bool("dev", false, "start from the dev preset (port 0, fast loops, no per-IP limit) unless the file names a preset")
	region := fs.String("region", "", "region name (env "+envRegion+")")
	listen := fs.String("listen", "", "HTTP listen address host:port (env "+envListen+")")
	redisAddr := fs.String("redis", "", "Redis address host:port (env "+envRedis+")")
	sentinels := fs.String("redis-sentinels", "", "sentinel addresses host:port, comma-separated: a replicated Redis under Sentinel instead of -redis (needs -redis-master)")
	masterName := fs.String("redis-master", "", "Sentinel's name of the region's Redis group")
	durMode := fs.String("durability", "", "when a reservation counts as done: fsync (appendfsync always), wait (WAIT on replicas) or wait+fsync (default: the config file's, else fsync)")
	waitReplicas := fs.Int("wait-replicas", 0, "replicas WAIT needs in the wait modes (0: the config file's, else 1)")
	waitTimeout := fs.Duration("wait-timeout", 0, "WAIT's timeout in the wait modes; past it the buyer hears outcome_unknown (0: the config file's, else 50ms)")
	insecure := fs.Bool("insecure-dev-identity", false, "take userId from the request body with no proof (local development only)")
	weak := fs.Bool("allow-weak-durability", false, "be ready even if Redis does not fsync every write (benchmarks only)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	etcdEndpoints := fs.String("etcd", os.Getenv("FLASHSALE_ETCD"), "etcd endpoints, comma-separated (env FLASHSALE_ETCD): follow the sales there instead of only the config file")
	prefix := fs.String("prefix", layout.DefaultPrefix, "etcd key prefix")
	runAgent := fs.Bool("agent", false, "also run a candidate for this region's agent (needs -etcd): applies grants and releases to Redis, reports to the coordinator")
	endpoint := fs.String("endpoint", "", "this region's shopper base URL, registered by the agent for redirects (default: http://<listen address>)")
	payMode := fs.String("payment", envOr(envPayment, "none"), "payment provider of confirm: none (confirm records the sale unpaid) or dev (simulated provider behind a circuit breaker) (env "+envPayment+")")
	ordersDSN := fs.String("orders-dsn", os.Getenv(envOrdersDSN), "drain the order streams into this SQL store: sqlite:///path/orders.db or postgres://... (env "+envOrdersDSN+"; empty: no order consumer)")
	clockOffset := fs.Duration("clock-offset", 0, "add this to the clock the seller and its agent read (sale times, reservation expiry, report times): chaos runs give one region a skewed clock on a machine whose processes share one")
	gossipBind := fs.String("gossip", os.Getenv("FLASHSALE_GOSSIP"), "gossip with the region's other sellers on this host:port (memberlist, TCP and UDP; env FLASHSALE_GOSSIP; empty: run alone)")
	gossipSeeds := fs.String("gossip-seeds", os.Getenv("FLASHSALE_GOSSIP_SEEDS"), "host:port of members to join, comma-separated (env FLASHSALE_GOSSIP_SEEDS)")
	gossipKeys := fs.String("gossip-keys", os.Getenv("FLASHSALE_GOSSIP_KEYS"), "gossip keyring `file`: base64 keys of 16, 24 or 32 bytes, one per line, the first encrypts (env FLASHSALE_GOSSIP_KEYS); required unless -gossip-plaintext")
	gossipPreset := fs.String("gossip-preset", "lan", "gossip timings: lan (production) or local (loopback tests)")
	gossipPlain := fs.Bool("gossip-plaintext", false, "gossip without encryption (local development only)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: flashsale regional [-config file] [flags]")
		fmt.Fprintln(fs.Output(), "Settings apply in order: preset, config file, FLASHSALE_* environment, flags.")
		fmt.Fprintln(fs.Output(), "See cmd/flashsale/regional.example.yaml for every config file key.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("regional: unexpected arguments %q", fs.Args())
	}

	file := &regional.FileConfig{}
	if *configPath != "" {
		var err error
		if file, err = regional.LoadFile(*configPath); err != nil {
			return err
		}
	}
	if *dev && file.Preset == "" {
		file.Preset = "dev"
	}
	cfg, err := file.Config()
	if err != nil {
		return fmt.Errorf("config file %s: %w", *configPath, err)
	}
	if err := applyRegionalEnv(&cfg); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "region":
			cfg.Region = *region
		case "listen":
			cfg.ListenAddr = *listen
		case "redis":
			cfg.RedisAddr = *redisAddr
		case "insecure-dev-identity":
			cfg.InsecureDevIdentity = *insecure
		case "allow-weak-durability":
			cfg.AllowWeakDurability = *weak
		case "redis-sentinels":
			cfg.RedisSentinels = strings.Split(*sentinels, ",")
		case "redis-master":
			cfg.RedisMasterName = *masterName
		case "durability":
			cfg.Durability.Mode = redisstore.DurabilityMode(*durMode)
		case "wait-replicas":
			cfg.Durability.Replicas = *waitReplicas
		case "wait-timeout":
			cfg.Durability.WaitTimeout = *waitTimeout
		}
	})
	if *clockOffset != 0 {
		cfg.Now = offsetClock(*clockOffset)
	}
	if *gossipBind != "" { // the flags replace the config file's gossip block
		gs := gossip.Settings{Bind: *gossipBind, Seeds: strings.Split(*gossipSeeds, ","), KeysFile: *gossipKeys, Preset: *gossipPreset, Plaintext: *gossipPlain}
		if cfg.Gossip, err = gs.Config(); err != nil {
			return fmt.Errorf("-gossip: %w", err)
		}
	}
	if cfg.Gossip != nil {
		cfg.RefreshInterval = regional.GossipRefreshInterval // a safety net: the other sellers' reads arrive by gossip
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	for env, on := range map[string]bool{redisstore.EnvUnsafeNoFence: redisstore.UnsafeNoFence(), redisstore.EnvUnsafeReconcileEtcdOnly: redisstore.UnsafeReconcileEtcdOnly()} {
		if on {
			log.Error("UNSAFE test-only switch on: a defence against oversell and lost reservations is off", "env", env)
		}
	}
	conn := cfg.RedisConn(os.Getenv(envRedisPass))
	rdb := redisstore.NewClient(conn)
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	deps := regional.Deps{Redis: rdb, Registry: reg, Logger: log}
	switch *payMode {
	case "none":
	case "dev":
		if deps.Payment, err = devPayment(reg, log); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-payment %q: want none or dev", *payMode)
	}
	if *ordersDSN != "" {
		store, err := orders.Open(ctx, *ordersDSN)
		if err != nil {
			return fmt.Errorf("-orders-dsn: %w", err)
		}
		defer store.Close() // after srv.Close, which stops the consumer
		deps.Orders = store
	}
	srv, err := regional.New(cfg, deps)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Close()
	if *etcdEndpoints != "" {
		// The order store is the agent's second witness when Redis lost
		// writes, unless a negative control turns that off (test-only).
		var witness agent.Witness
		if deps.Orders != nil && !redisstore.UnsafeReconcileEtcdOnly() {
			witness = orders.NewWitness(srv.Store(), deps.Orders, log.With("role", "agent"))
		}
		stop, err := followEtcd(ctx, log, srv, rdb, cfg, strings.Split(*etcdEndpoints, ","), *prefix, *runAgent, *endpoint, witness, reg)
		if err != nil {
			return err
		}
		defer stop()
	} else if *runAgent {
		return errors.New("regional: -agent needs -etcd")
	}
	rd := srv.CheckReady(ctx)
	fmt.Fprintf(stdout, "regional region=%s http=%s redis=%s durability=%q ready=%t identity=%s payment=%s orders=%s\n",
		cfg.Region, srv.Addr(), conn, srv.Store().DurabilitySetting(), rd.Ready, rd.Identity, *payMode, orEmpty(redactDSN(*ordersDSN), "none"))

	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case <-srv.Done():
	}
	return srv.Close()
}

// followEtcd keeps the seller's sales equal to etcd's and, with agent,
// runs a candidate for the region's agent, reconciling from witness (the
// order store; nil: etcd's floors alone) after Redis lost writes. stop
// undoes both.
func followEtcd(ctx context.Context, log *slog.Logger, srv *regional.Server, rdb redis.UniversalClient, cfg regional.Config,
	endpoints []string, prefix string, withAgent bool, endpoint string, witness agent.Witness, reg *prometheus.Registry) (stop func(), err error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	w := regional.NewSaleWatcher(cli, prefix, cfg.Region, srv.Sales(), log)
	if err := w.Start(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	jctx, stopJoin := context.WithCancel(ctx)
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		if srv.GossipAddr() != "" {
			joinRegionGossip(jctx, cli, layout.Keys{Prefix: prefix}.Region(cfg.Region), srv, log)
		}
	}()
	var a *agent.Agent
	if withAgent {
		acfg := agent.DefaultConfig()
		acfg.Region, acfg.Prefix, acfg.RedisAddr, acfg.Logger = cfg.Region, prefix, cfg.RedisConn("").String(), log
		acfg.Endpoint = endpoint
		if acfg.Endpoint == "" {
			acfg.Endpoint = "http://" + srv.Addr()
		}
		acfg.Demand = redisstore.NewDemandMeter(rdb, nil).Rate
		if n := srv.GossipNode(); n != nil { // the sellers' demand and membership come by gossip
			acfg.Demand = redisstore.NewDemandMeterFunc(n.Demand, nil).Rate
			acfg.Membership = n
		}
		acfg.Now = cfg.Now // the seller's clock, skewed or not (nil: time.Now)
		acfg.Witness = witness
		if a, err = agent.New(acfg, cli, srv.Store(), reg); err == nil {
			err = a.Start(ctx)
		}
		if err != nil {
			stopJoin()
			<-joined
			w.Close()
			cli.Close()
			return nil, fmt.Errorf("region agent: %w", err)
		}
	}
	return func() {
		stopJoin()
		<-joined
		_ = a.Close()
		_ = w.Close()
		_ = cli.Close()
	}, nil
}

// joinRegionGossip joins the gossip address the region's agent registers
// (layout.RegionInfo.Gossip) each time the region info is written, so a
// seller finds the region's cluster through etcd as well as its seeds.
func joinRegionGossip(ctx context.Context, cli *clientv3.Client, key string, srv *regional.Server, log *slog.Logger) {
	join := func(k, v []byte) {
		info, err := layout.DecodeRegion(k, v)
		if err != nil {
			log.Warn("gossip: undecodable region info", "err", err)
			return
		}
		if err := srv.JoinGossip(info.Gossip); err != nil {
			log.Debug("gossip: the agent's address did not answer; retrying", "addr", info.Gossip, "err", err)
		}
	}
	for ctx.Err() == nil {
		resp, err := cli.Get(ctx, key)
		if err == nil {
			for _, kv := range resp.Kvs {
				join(kv.Key, kv.Value)
			}
			for wr := range cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(resp.Header.Revision+1)) {
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut {
						join(ev.Kv.Key, ev.Kv.Value)
					}
				}
			}
		}
		select { // the watch ended (compaction, leader loss): read again
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// devPayment is the simulated provider behind the circuit breaker, its
// metrics in the process registry.
func devPayment(reg prometheus.Registerer, log *slog.Logger) (*payment.Breaker, error) {
	dev, err := payment.NewDev(payment.DevDefaults(uint64(time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	bc := payment.DefaultBreakerConfig()
	bc.Name, bc.Registerer, bc.Logger = "dev", reg, log
	return payment.NewBreaker(dev, bc)
}

// offsetClock is time.Now moved by d.
func offsetClock(d time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(d) }
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func orEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// redactDSN hides a password before the DSN is printed.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}

func applyRegionalEnv(cfg *regional.Config) error {
	if v := os.Getenv(envRegion); v != "" {
		cfg.Region = v
	}
	if v := os.Getenv(envListen); v != "" {
		cfg.ListenAddr = v
	}
	if v := os.Getenv(envRedis); v != "" {
		cfg.RedisAddr = v
	}
	if v := os.Getenv(envJWTSecret); v != "" {
		cfg.JWT.HS256Secret, cfg.JWT.Ed25519PublicKey = []byte(v), nil
	}
	if v := os.Getenv(envJWTPublicKey); v != "" {
		pub, err := regional.ParseEd25519PublicKey(v)
		if err != nil {
			return fmt.Errorf("%s: %w", envJWTPublicKey, err)
		}
		cfg.JWT.Ed25519PublicKey, cfg.JWT.HS256Secret = pub, nil
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"FLASHSALE_INSECURE_DEV_IDENTITY", &cfg.InsecureDevIdentity}, {"FLASHSALE_ALLOW_WEAK_DURABILITY", &cfg.AllowWeakDurability}} {
		if v := os.Getenv(b.name); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s %q: want true or false", b.name, v)
			}
			*b.dst = on
		}
	}
	return nil
}
