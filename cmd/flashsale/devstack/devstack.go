// Package devstack runs the whole product on one machine, in one process:
// an embedded etcd, a coordinator, and per region a redis-server child (or,
// for an HA region, a primary, a replica and three redis-sentinel
// children), its agent and its sellers. A Redis child that crashes is
// started again, as a process manager would. It is what `flashsale dev` (make run) starts, and
// what end-to-end tests start. It never stands in for production wiring: it
// only wires the real components together with dev settings.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator"
	"flashsale/coordinator/api"
	"flashsale/internal/etcdembed"
	"flashsale/internal/redisproc"
	"flashsale/quota/layout"
	"flashsale/regional"
	"flashsale/regional/agent"
	"flashsale/regional/gossip"
	"flashsale/regional/orders"
	"flashsale/regional/payment"
	"flashsale/regional/redisstore"
)

// Options shape the stack. Zero values take the defaults of DefaultOptions.
type Options struct {
	Dir      string   // data dir; empty: a temp dir removed on Close unless Keep
	Keep     bool     // keep Dir on Close
	Regions  []string // region names
	Sellers  int      // seller servers per region
	GRPCAddr string   // coordinator gRPC address (port 0: any free port)
	EtcdAddr string   // embedded etcd client address
	HTTPPort int      // first seller port; sellers take consecutive ports (0: any free ports)

	AdminToken          string // coordinator bearer token; empty: random
	JWTSecret           string // shopper token HS256 secret; empty: random
	InsecureDevIdentity bool   // accept userId from the body with no token (loudly insecure)

	DemoTotal int64         // units of the demo sale; 0: no demo sale
	DemoStart time.Duration // the demo sale opens this long after start
	DemoTTL   time.Duration // reservation TTL of the demo sale

	// HARegions run their Redis replicated under Sentinel (a primary,
	// HAReplicas replicas, three sentinels), reached through go-redis's
	// failover client by the sellers and the agent, with durability
	// wait+fsync (WAIT on a replica, and appendfsync always).
	HARegions  []string
	HAReplicas int // 0 means 1

	// Payment tunes the simulated payment provider every seller's confirm
	// charges through its own circuit breaker; nil: payment.DevDefaults.
	Payment *payment.DevConfig

	Logger *slog.Logger
}

// DefaultOptions is what `make run` starts: three regions, two sellers each,
// fixed ports, a 10,000-unit demo sale opening 5 seconds after start.
func DefaultOptions() Options {
	return Options{
		Regions:   []string{"us", "eu", "ap"},
		Sellers:   2,
		GRPCAddr:  "127.0.0.1:7400",
		EtcdAddr:  "127.0.0.1:2379",
		HTTPPort:  8081,
		DemoTotal: 10000,
		DemoStart: 5 * time.Second,
		DemoTTL:   2 * time.Minute,
	}
}

// Region is one region's running parts.
type Region struct {
	Name     string
	Endpoint string // the first seller's base URL, used for redirects
	// Redis is the region's single redis-server; nil for an HA region,
	// whose Redis group is HA.
	Redis      *redisproc.Proc
	HA         *redisproc.HA
	Conn       redisstore.Conn // how sellers and agent reach it
	Durability redisstore.Durability
	Store      *redisstore.Store
	Agent      *agent.Agent
	// Gossip is the agent's member of the region's gossip cluster: the
	// sellers join it, and the agent reads their demand and membership.
	Gossip  *gossip.Node
	Sellers []*regional.Server
	// OrdersDSN is the region's SQLite order store (under the data dir):
	// every seller of the region runs an order consumer into it.
	OrdersDSN string
	Orders    orders.Store
	rdb       redis.UniversalClient
	watchers  []*regional.SaleWatcher
}

// Client is the region's Redis client, shared by its sellers and agent
// (a failover client for an HA region).
func (r *Region) Client() redis.UniversalClient { return r.rdb }

// Stack is a running dev deployment.
type Stack struct {
	Opts    Options
	Dir     string
	Etcd    *etcdembed.Etcd
	Etcdcli *clientv3.Client
	Coord   *coordinator.Coordinator
	Regions []*Region
	// Payment is the simulated provider shared by every seller (each
	// behind its own breaker); SetDown simulates an outage.
	Payment *payment.Dev

	closers []func() error // run in reverse order by Close
	tempDir bool
}

// Start starts everything and, if asked, creates the demo sale. On error
// whatever started is stopped again.
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	o = withDefaults(o)
	s = &Stack{Opts: o, Dir: o.Dir}
	defer func() {
		if err != nil {
			_ = s.Close()
			s = nil
		}
	}()
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "flashsale-dev-"); err != nil {
			return s, err
		}
		s.tempDir = true
	}
	log := o.Logger

	if s.Etcd, err = etcdembed.Start(filepath.Join(s.Dir, "etcd"), o.EtcdAddr); err != nil {
		return s, err
	}
	s.closers = append(s.closers, s.Etcd.Close)
	if s.Etcdcli, err = clientv3.New(clientv3.Config{Endpoints: []string{s.Etcd.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		return s, err
	}
	s.closers = append(s.closers, s.Etcdcli.Close)

	ccfg := coordinator.DevConfig()
	ccfg.ListenAddr = o.GRPCAddr
	ccfg.Token = o.AdminToken
	ccfg.Logger = log.With("role", "coordinator")
	if s.Coord, err = coordinator.New(ccfg, s.Etcdcli, prometheus.NewRegistry()); err != nil {
		return s, err
	}
	if err = s.Coord.Start(ctx); err != nil {
		return s, err
	}
	s.closers = append(s.closers, s.Coord.Close)

	pc := payment.DevDefaults(uint64(time.Now().UnixNano()))
	if o.Payment != nil {
		pc = *o.Payment
	}
	if s.Payment, err = payment.NewDev(pc); err != nil {
		return s, err
	}

	// Every seller's listener is bound before any starts: each needs the
	// others' addresses for its redirect table, and a port picked but not
	// held could be taken meanwhile.
	lns, err := sellerListeners(o)
	if err != nil {
		return s, err
	}
	for _, ln := range lns {
		s.closers = append(s.closers, closeListener(ln))
	}
	endpoints := map[string]string{}
	for i, name := range o.Regions {
		endpoints[name] = "http://" + lns[i*o.Sellers].Addr().String()
	}
	for i, name := range o.Regions {
		r, err := s.startRegion(ctx, name, lns[i*o.Sellers:(i+1)*o.Sellers], endpoints)
		if err != nil {
			return s, fmt.Errorf("region %s: %w", name, err)
		}
		s.Regions = append(s.Regions, r)
	}
	if o.DemoTotal > 0 {
		if err := s.createDemoSale(ctx); err != nil {
			return s, fmt.Errorf("demo sale: %w", err)
		}
	}
	return s, nil
}

func (s *Stack) startRegion(ctx context.Context, name string, lns []net.Listener, endpoints map[string]string) (*Region, error) {
	o := s.Opts
	log := o.Logger.With("region", name)
	r := &Region{Name: name, Endpoint: endpoints[name]}
	var err error
	if slices.Contains(o.HARegions, name) {
		r.HA, err = redisproc.StartHA(ctx, redisproc.HAOptions{
			Dir: filepath.Join(s.Dir, "redis-"+name), Replicas: o.HAReplicas, MasterName: "flashsale-" + name,
			Args:      []string{"--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"},
			Supervise: true,
		})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, r.HA.Close)
		r.Conn = redisstore.Conn{Sentinels: r.HA.SentinelAddrs(), MasterName: r.HA.MasterName, PoolSize: 64}
		// Two shared cores under load can take tens of milliseconds to
		// answer WAIT; the dev sellers' Redis budget is 2 s.
		r.Durability = redisstore.Durability{Mode: redisstore.DurableWaitFsync, WaitTimeout: 250 * time.Millisecond}
	} else {
		r.Redis, err = redisproc.Start(ctx, redisproc.Options{Dir: filepath.Join(s.Dir, "redis-"+name), Supervise: true})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, r.Redis.Close)
		r.Conn = redisstore.Conn{Addr: r.Redis.Addr, PoolSize: 64}
	}
	r.rdb = redisstore.NewClient(r.Conn)
	s.closers = append(s.closers, r.rdb.Close)
	r.Store = redisstore.NewStore(r.rdb, name).WithDurability(r.Durability)
	if err := r.Store.Load(ctx); err != nil {
		return nil, err
	}

	dbPath, err := filepath.Abs(filepath.Join(s.Dir, "orders-"+name+".db"))
	if err != nil {
		return nil, err
	}
	r.OrdersDSN = "sqlite://" + dbPath
	if r.Orders, err = orders.Open(ctx, r.OrdersDSN); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, r.Orders.Close) // closed after the sellers that write it

	acfg := agent.DevConfig()
	acfg.Region = name
	acfg.Endpoint = r.Endpoint
	acfg.RedisAddr = r.Conn.String()
	acfg.Logger = log.With("role", "agent")
	if r.Gossip, err = gossip.Start(gossip.Config{Name: "agent-" + name, Region: name, Role: gossip.RoleAgent,
		Preset: gossip.PresetLocal, Plaintext: true, Logger: acfg.Logger}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, r.Gossip.Close)
	acfg.Membership = r.Gossip
	acfg.Demand = redisstore.NewDemandMeterFunc(r.Gossip.Demand, nil).Rate
	acfg.Witness = orders.NewWitness(r.Store, r.Orders, acfg.Logger)
	if r.Agent, err = agent.New(acfg, s.Etcdcli, r.Store, prometheus.NewRegistry()); err != nil {
		return nil, err
	}
	if err := r.Agent.Start(ctx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, r.Agent.Close)

	for _, ln := range lns {
		addr := ln.Addr().String()
		cfg := regional.DevConfig()
		cfg.Region = name
		cfg.ListenAddr = addr
		cfg.RedisAddr, cfg.RedisSentinels, cfg.RedisMasterName = r.Conn.Addr, r.Conn.Sentinels, r.Conn.MasterName
		cfg.Durability = r.Durability
		cfg.Regions = endpoints
		cfg.InsecureDevIdentity = o.InsecureDevIdentity
		cfg.JWT = regional.JWTConfig{HS256Secret: []byte(o.JWTSecret)}
		cfg.BatchReserve = true
		// The region's sellers gossip over loopback, joining through the
		// agent's member, with the safety-net refresh of a gossiping seller.
		cfg.Gossip = &gossip.Config{Name: "seller-" + addr, Preset: gossip.PresetLocal, Plaintext: true, Seeds: []string{r.Gossip.Addr()}}
		cfg.RefreshInterval = regional.GossipRefreshInterval
		reg := prometheus.NewRegistry()
		sellerLog := log.With("role", "seller", "addr", addr)
		bc := payment.DefaultBreakerConfig()
		bc.Name, bc.Registerer, bc.Logger = "dev", reg, sellerLog
		breaker, err := payment.NewBreaker(s.Payment, bc)
		if err != nil {
			return nil, err
		}
		srv, err := regional.New(cfg, regional.Deps{Redis: r.rdb, Registry: reg, Logger: sellerLog, Payment: breaker, Orders: r.Orders, Listener: ln})
		if err != nil {
			return nil, err
		}
		w := regional.NewSaleWatcher(s.Etcdcli, layout.DefaultPrefix, name, srv.Sales(), log)
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, w.Close)
		if err := srv.Start(ctx); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, srv.Close)
		r.Sellers = append(r.Sellers, srv)
		r.watchers = append(r.watchers, w)
	}
	return r, nil
}

// Client returns a gRPC client of the coordinator and a context carrying the
// admin token.
func (s *Stack) Client(ctx context.Context) (api.CoordinatorClient, context.Context, func() error, error) {
	cc, err := grpc.NewClient(s.Coord.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.Opts.AdminToken)
	return api.NewCoordinatorClient(cc), ctx, cc.Close, nil
}

func (s *Stack) createDemoSale(ctx context.Context) error {
	c, ctx, closeConn, err := s.Client(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	deadline := time.Now().Add(15 * time.Second)
	for !s.Coord.IsLeader() {
		if time.Now().After(deadline) {
			return errors.New("the coordinator did not become leader within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now().Add(s.Opts.DemoStart)
	sale := &api.Sale{Id: "demo", Total: s.Opts.DemoTotal, PerUserLimit: 1,
		StartsAt: timestamppb.New(start), EndsAt: timestamppb.New(start.Add(time.Hour)),
		ReservationTtl: durationpb.New(s.Opts.DemoTTL)}
	for _, r := range s.Opts.Regions {
		sale.Regions = append(sale.Regions, &api.RegionSpec{Name: r, Weight: 1})
	}
	_, err = c.CreateSale(ctx, &api.CreateSaleRequest{Sale: sale})
	return err
}

// Close stops everything in reverse start order and removes a temp dir
// unless Keep. Safe twice and on nil.
func (s *Stack) Close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	if s.tempDir && !s.Opts.Keep {
		errs = append(errs, os.RemoveAll(s.Dir))
		s.tempDir = false
	}
	return errors.Join(errs...)
}

func withDefaults(o Options) Options {
	d := DefaultOptions()
	if len(o.Regions) == 0 {
		o.Regions = d.Regions
	}
	if o.Sellers <= 0 {
		o.Sellers = d.Sellers
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = "127.0.0.1:0"
	}
	if o.EtcdAddr == "" {
		o.EtcdAddr = "127.0.0.1:0"
	}
	if o.AdminToken == "" {
		o.AdminToken = randomHex()
	}
	if o.JWTSecret == "" {
		o.JWTSecret = randomHex()
	}
	if o.DemoTTL <= 0 {
		o.DemoTTL = d.DemoTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// sellerListeners binds one listener per seller: consecutive ports from
// HTTPPort, or free ports when it is 0.
func sellerListeners(o Options) ([]net.Listener, error) {
	var lns []net.Listener
	for i := range len(o.Regions) * o.Sellers {
		port := 0
		if o.HTTPPort != 0 {
			port = o.HTTPPort + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("seller port: %w (pick others with -http-port, or 0 for free ports)", err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// closeListener closes a listener no server took over (a server closes its
// own); closing twice is harmless.
func closeListener(ln net.Listener) func() error {
	return func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
