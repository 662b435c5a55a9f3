package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"flashsale/coordinator/api"
	"flashsale/internal/childproc"
	"flashsale/internal/redisproc"
	"flashsale/regional/orders"
)

const (
	adminToken = "chaos-admin-token"
	jwtSecret  = "chaos-jwt-secret-chaos-jwt-secret-0123456789"
)

// Build compiles cmd/flashsale into dir and returns the binary's path. The
// module root is found from the working directory.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "flashsale")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/flashsale")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/flashsale: %w\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Topology says what a scenario runs.
type Topology struct {
	Regions []string
	// ClockOffset per region, given to its seller and agent.
	ClockOffset map[string]time.Duration
	// NoAOF runs a region's Redis without an append-only file (and its
	// sellers with -allow-weak-durability): the unsafe setting of the
	// negative control, where a restart loses every write.
	NoAOF map[string]bool
	// HA runs a region's Redis as a primary, one replica and three
	// sentinels (redisproc.StartHA, supervised: a killed node comes back
	// as a replica), reached by the seller and agent through Sentinel with
	// the durability mode given: "wait+fsync" or "wait" (WAIT 1, and
	// min-replicas-to-write 1 on every node), or "fsync" (replication left
	// asynchronous: the unsafe setting).
	HA map[string]string
	// Env adds variables to a region's seller and agent (the test-only
	// switches of regional/redisstore/unsafe.go).
	Env map[string][]string
}

// Cluster is a running deployment: a three-member etcd in this process,
// toxiproxy in this process, two coordinators and, per region, a
// redis-server, a seller (the buyers' endpoint) and an agent process.
type Cluster struct {
	dir, bin string
	topo     Topology
	etcd     *etcdCluster
	tox      *toxiproxy.ApiServer
	coords   []*coordProc
	regions  map[string]*region
	cli      *clientv3.Client // straight to etcd, never through a proxy: the checker's
	grpc     []*grpc.ClientConn
}

type coordProc struct {
	proc
	grpcAddr string
	etcd     []*toxiproxy.Proxy
	api      api.CoordinatorClient
}

type region struct {
	name        string
	redis       *redisproc.Proc // nil when ha is set
	ha          *redisproc.HA
	rdb         *redis.Client      // straight to Redis: the checker's
	sellerRedis *toxiproxy.Proxy   // the seller's link to Redis
	agentEtcd   []*toxiproxy.Proxy // the agent's links to the etcd members
	seller      *proc
	agent       *proc
	url         string // the seller's base URL
	agentURL    string
	ordersDSN   string
	orders      orders.Store
}

// Start brings the deployment up and waits until a coordinator leads and
// every process is ready.
func Start(ctx context.Context, bin, dir string, topo Topology) (c *Cluster, err error) {
	// The checker's clients dial stores that a scenario kills on purpose:
	// go-redis's log of each failed dial is noise here.
	redis.SetLogger(quietRedis{})
	c = &Cluster{dir: dir, bin: bin, topo: topo, regions: map[string]*region{}}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	if c.etcd, err = startEtcdCluster(filepath.Join(dir, "etcd"), 3); err != nil {
		return c, err
	}
	if c.cli, err = clientv3.New(clientv3.Config{Endpoints: c.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		return c, err
	}
	c.tox = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())

	for i := range 2 {
		cp := &coordProc{}
		for m, ep := range c.etcd.Endpoints() {
			p, err := c.proxy(fmt.Sprintf("coord%d-etcd%d", i, m), ep)
			if err != nil {
				return c, err
			}
			cp.etcd = append(cp.etcd, p)
		}
		port, err := childproc.FreePort()
		if err != nil {
			return c, err
		}
		cp.grpcAddr = "127.0.0.1:" + strconv.Itoa(port)
		cp.proc = proc{name: fmt.Sprintf("coordinator%d", i), bin: bin, log: filepath.Join(dir, fmt.Sprintf("coordinator%d.log", i)),
			args: []string{"coordinator", "-etcd", proxyAddrs(cp.etcd), "-grpc-addr", cp.grpcAddr, "-metrics-addr", "",
				"-token", adminToken, "-interval", "50ms", "-session-ttl", "2", "-report-stale", "2s",
				"-learning-grace", "1s", "-split-lead", "1s"}}
		if err := cp.start(); err != nil {
			return c, err
		}
		cc, err := grpc.NewClient(cp.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return c, err
		}
		c.grpc = append(c.grpc, cc)
		cp.api = api.NewCoordinatorClient(cc)
		c.coords = append(c.coords, cp)
	}

	env := []string{"FLASHSALE_JWT_HS256_SECRET=" + jwtSecret}
	for _, name := range topo.Regions {
		r := &region{name: name}
		c.regions[name] = r
		// sellerRedis and agentRedis are the processes' -redis flags.
		var sellerRedis, agentRedis []string
		if mode, ok := topo.HA[name]; ok {
			var args []string
			if mode != "fsync" {
				args = []string{"--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"}
			}
			if r.ha, err = redisproc.StartHA(ctx, redisproc.HAOptions{Dir: filepath.Join(dir, "redis-"+name), Replicas: 1,
				MasterName: "chaos-" + name, Args: args, Supervise: true}); err != nil {
				return c, err
			}
			r.rdb = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: r.ha.MasterName, SentinelAddrs: r.ha.SentinelAddrs(), MaxRetries: -1})
			sellerRedis = []string{"-redis-sentinels", strings.Join(r.ha.SentinelAddrs(), ","), "-redis-master", r.ha.MasterName,
				"-durability", mode, "-wait-timeout", "250ms"}
			agentRedis = sellerRedis
		} else {
			ropts := redisproc.Options{Dir: filepath.Join(dir, "redis-"+name)}
			if topo.NoAOF[name] {
				ropts.Args = []string{"--appendonly", "no"}
			}
			if r.redis, err = redisproc.Start(ctx, ropts); err != nil {
				return c, err
			}
			r.rdb = redis.NewClient(&redis.Options{Addr: r.redis.Addr, MaxRetries: -1})
			if r.sellerRedis, err = c.proxy("seller-"+name+"-redis", r.redis.Addr); err != nil {
				return c, err
			}
			sellerRedis, agentRedis = []string{"-redis", r.sellerRedis.Listen}, []string{"-redis", r.redis.Addr}
		}
		for m, ep := range c.etcd.Endpoints() {
			p, err := c.proxy(fmt.Sprintf("agent-%s-etcd%d", name, m), ep)
			if err != nil {
				return c, err
			}
			r.agentEtcd = append(r.agentEtcd, p)
		}
		sp, err := childproc.FreePort()
		if err != nil {
			return c, err
		}
		ap, err := childproc.FreePort()
		if err != nil {
			return c, err
		}
		r.url = "http://127.0.0.1:" + strconv.Itoa(sp)
		r.agentURL = "http://127.0.0.1:" + strconv.Itoa(ap)
		r.ordersDSN = "sqlite://" + filepath.Join(dir, "orders-"+name+".db")
		common := []string{"regional", "-dev", "-region", name, "-log-level", "warn"}
		if d := topo.ClockOffset[name]; d != 0 {
			common = append(common, "-clock-offset", d.String())
		}
		if topo.NoAOF[name] {
			common = append(common, "-allow-weak-durability")
		}
		// The seller serves the buyers and is not an agent candidate; the
		// agent process also drains the order stream into SQL. Both follow
		// the sales in etcd.
		renv := append(append([]string(nil), env...), topo.Env[name]...)
		r.seller = &proc{name: name + "-seller", bin: bin, env: renv, log: filepath.Join(dir, name+"-seller.log"),
			args: slices.Concat(common, []string{"-listen", "127.0.0.1:" + strconv.Itoa(sp)}, sellerRedis,
				[]string{"-etcd", strings.Join(c.etcd.Endpoints(), ",")})}
		r.agent = &proc{name: name + "-agent", bin: bin, env: renv, log: filepath.Join(dir, name+"-agent.log"),
			args: slices.Concat(common, []string{"-listen", "127.0.0.1:" + strconv.Itoa(ap)}, agentRedis,
				[]string{"-etcd", proxyAddrs(r.agentEtcd), "-agent", "-endpoint", r.url, "-orders-dsn", r.ordersDSN})}
		if err := r.seller.start(); err != nil {
			return c, err
		}
		if err := r.agent.start(); err != nil {
			return c, err
		}
	}
	for _, name := range topo.Regions {
		r := c.regions[name]
		for _, u := range []string{r.url, r.agentURL} {
			if err := waitFor(ctx, 60*time.Second, name+" ready at "+u, func() bool { return ready(u) }); err != nil {
				return c, err
			}
		}
		if r.orders, err = orders.Open(ctx, r.ordersDSN); err != nil {
			return c, fmt.Errorf("open %s: %w", r.ordersDSN, err)
		}
	}
	if err := waitFor(ctx, 60*time.Second, "a coordinator leader", func() bool { return c.Leader() >= 0 }); err != nil {
		return c, err
	}
	return c, nil
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func (c *Cluster) proxy(name, upstream string) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(c.tox, name, "127.0.0.1:0", upstream)
	if err := c.tox.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("toxiproxy %s: %w", name, err)
	}
	return p, nil
}

func proxyAddrs(ps []*toxiproxy.Proxy) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Listen)
	}
	return strings.Join(s, ",")
}

func ready(base string) bool {
	hc := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func waitFor(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up waiting %v for %s", within, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (c *Cluster) adminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

// Leader returns the index of the coordinator that leads, or -1.
func (c *Cluster) Leader() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, cp := range c.coords {
		r, err := cp.api.Readiness(c.adminCtx(ctx), &api.ReadinessRequest{})
		if err != nil || r.Leader == "" {
			continue
		}
		for i, o := range c.coords {
			if o.grpcAddr == r.Leader {
				return i
			}
		}
	}
	return -1
}

// CreateSale makes a sale of total units over every region, opening in
// about two seconds, and waits until it is open with every region
// reporting.
func (c *Cluster) CreateSale(ctx context.Context, id string, total int64) error {
	start := time.Now().Add(2 * time.Second)
	var regions []*api.RegionSpec
	for _, r := range c.topo.Regions {
		regions = append(regions, &api.RegionSpec{Name: r, Weight: 1})
	}
	sale := &api.Sale{Id: id, Total: total, PerUserLimit: 1,
		StartsAt: timestamppb.New(start), EndsAt: timestamppb.New(start.Add(time.Hour)), ReservationTtl: durationpb.New(time.Hour),
		Regions: regions}
	var err error
	for _, cp := range c.coords {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cp.api.CreateSale(c.adminCtx(cctx), &api.CreateSaleRequest{Sale: sale})
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create sale: %w", err)
	}
	// Reported, not fresh: a region whose clock runs behind the
	// coordinator's (a chaos scenario) reports in time but its reports
	// look old, and the status says so.
	return waitFor(ctx, 30*time.Second, "the sale to open with every region reporting", func() bool {
		st := c.status(id)
		if st == nil || !st.Open || len(st.Regions) != len(c.topo.Regions) {
			return false
		}
		for _, r := range st.Regions {
			if !r.Reported {
				return false
			}
		}
		return true
	})
}

func (c *Cluster) status(id string) *api.SaleStatusResponse {
	for _, cp := range c.coords {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cp.api.SaleStatus(c.adminCtx(ctx), &api.SaleRef{Id: id})
		cancel()
		if err == nil {
			return st
		}
	}
	return nil
}

// Close stops everything this cluster started; safe on a partial start.
func (c *Cluster) Close() {
	if c == nil {
		return
	}
	for _, r := range c.regions {
		if r.seller != nil {
			r.seller.kill()
		}
		if r.agent != nil {
			r.agent.kill()
		}
	}
	for _, cp := range c.coords {
		cp.kill()
	}
	for _, cc := range c.grpc {
		cc.Close()
	}
	for _, r := range c.regions {
		if r.orders != nil {
			r.orders.Close()
		}
		if r.rdb != nil {
			r.rdb.Close()
		}
		r.redis.Close()
		if r.ha != nil {
			_ = r.ha.Close()
		}
	}
	if c.tox != nil {
		_ = c.tox.Collection.Clear()
	}
	if c.cli != nil {
		c.cli.Close()
	}
	c.etcd.Close()
}

// primary is the node the sentinels of an HA region name.
func (r *region) primary(ctx context.Context) (*redisproc.Proc, error) {
	if r.ha == nil {
		return nil, fmt.Errorf("region %s is not replicated", r.name)
	}
	return r.ha.Primary(ctx)
}

// waitFailover waits until the sentinels of an HA region name a primary
// other than old that answers as one.
func (r *region) waitFailover(ctx context.Context, old string, within time.Duration) error {
	return waitFor(ctx, within, "a primary other than "+old+" in "+r.name, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		p, err := r.ha.Primary(pctx)
		if err != nil || p.Addr == old {
			return false
		}
		rdb := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
		defer rdb.Close()
		info, err := rdb.Info(pctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	})
}

// waitRole waits until the Redis at addr answers INFO replication with
// role (master or slave).
func waitRole(ctx context.Context, addr, role string, within time.Duration) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	return waitFor(ctx, within, addr+" as a "+role, func() bool {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		info, err := rdb.Info(ictx, "replication").Result()
		return err == nil && strings.Contains(info, "role:"+role+"\r")
	})
}

// lagReplica makes the replica of an HA region fall behind its primary p:
// the replica follows p through a toxiproxy whose stream to it is then
// black-holed for lag while p goes on answering. The sentinels get a long
// failover-timeout first, so they do not point the replica back at p's
// own address meanwhile (+fix-slave-config) and the lag stays. It returns
// how to remove the black hole.
func (c *Cluster) lagReplica(ctx context.Context, r *region, p *redisproc.Proc, lag time.Duration) (func(context.Context) error, error) {
	var replica *redisproc.Proc
	for _, n := range r.ha.Nodes {
		if n != p {
			replica = n
		}
	}
	for _, s := range r.ha.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		err := sc.Set(ctx, r.ha.MasterName, "failover-timeout", "120000").Err()
		_ = sc.Close()
		if err != nil {
			return nil, fmt.Errorf("sentinel %s: %w", s.Addr, err)
		}
	}
	px, err := c.proxy("replication-"+r.name, p.Addr)
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(px.Listen, ":")
	rdb := redis.NewClient(&redis.Options{Addr: replica.Addr, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.SlaveOf(ctx, host, port).Err(); err != nil {
		return nil, fmt.Errorf("replica %s through %s: %w", replica.Addr, px.Listen, err)
	}
	if err := waitFor(ctx, 10*time.Second, "the replica's link through the proxy", func() bool {
		info, err := rdb.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_port:"+port+"\r") && strings.Contains(info, "master_link_status:up")
	}); err != nil {
		return nil, err
	}
	heal, err := toxic(func(*Cluster) []*toxiproxy.Proxy { return one(px) }, "timeout", "downstream", `{"timeout":0}`)(ctx, c)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return heal, ctx.Err()
	case <-time.After(lag):
	}
	return heal, nil
}
