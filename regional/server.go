package regional

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"flashsale/quota"
	"flashsale/regional/gossip"
	"flashsale/regional/orders"
	"flashsale/regional/payment"
	"flashsale/regional/redisstore"
)

//go:embed openapi.yaml
var openAPI []byte

// Deps are what a Server uses but does not own.
type Deps struct {
	// Redis is the region's Redis; required. The caller closes it.
	Redis redis.UniversalClient
	// Registry receives the seller's metrics and is served at /metrics.
	// Nil: a fresh registry (never the global default).
	Registry *prometheus.Registry
	// Identity overrides the one built from Config (JWT, or the insecure
	// dev identity).
	Identity Identity
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// Payment, when set, is charged by confirm before the reservation is
	// confirmed: a payment.Breaker around the provider, so an outage
	// answers 503 fast and extends the reservation. Nil: confirm records
	// the sale without payment.
	Payment payment.Provider
	// Orders, when set, receives this seller's sales' order streams: the
	// server runs an orders.Consumer on it from Start to Close. The caller
	// opens and closes the store.
	Orders orders.Store
	// Listener, when set, is served instead of listening on
	// Config.ListenAddr: a caller that must know every seller's address
	// before any starts (the dev stack's redirect table) binds first. The
	// server closes it.
	Listener net.Listener
}

// consumerSeq keeps order consumer names unique when one process runs
// several sellers (the dev stack).
var consumerSeq atomic.Int64

// reserver is Store.Reserve, or the Batcher that coalesces it.
type reserver interface {
	Reserve(ctx context.Context, sale string, r redisstore.ReserveRequest) (redisstore.ReserveResult, error)
}

// Server is one regional seller: the shopper HTTP API and its funnel, the
// sale state cache with its counter refresh, the readiness checks and the
// reservation sweeper.
type Server struct {
	cfg     Config
	lnGiven net.Listener      // Deps.Listener
	demand  redisstore.Demand // buy attempts per sale, flushed to Redis for the agent
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	store   *redisstore.Store
	batcher *redisstore.Batcher
	reserve reserver
	adm     *admission
	conns   *connTracker // for the retry hint: who is asking
	sales   *Sales
	ident   Identity
	userLim *limiter
	ipLim   *limiter
	sweeper *Sweeper
	handler http.Handler
	payment payment.Provider
	pm      *payMetrics
	orders  *orders.Consumer
	gossip  *gossip.Node // the region's cluster; nil without Config.Gossip
	// sharedLoad is the load last put in the gossip metadata (health loop).
	sharedLoad int64
	// demandTotal is this seller's attempts per sale since it started, as
	// gossiped (the demand loop's goroutine only).
	demandTotal map[string]int64

	ready      atomic.Bool
	lastWarn   atomic.Int64    // unix nanos of the last per-request warning logged
	refreshMu  sync.Mutex      // serialises refreshAll
	gauged     map[string]bool // sales with a remaining-units gauge; guarded by refreshMu
	kick       chan struct{}   // asks the refresh loop for an early pass
	healthM    sync.Mutex      // serialises maintain
	slowChecks int             // readiness checks in a row that timed out while ready; guarded by healthM
	pending    map[string]int64
	last       Readiness

	mu       sync.Mutex
	started  bool
	ln       net.Listener
	hs       *http.Server
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{}
	serveErr error
	closed   bool
}

// New builds a Server; Start makes it serve.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Redis == nil {
		return nil, errors.New("regional: Deps.Redis is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "seller", "region", cfg.Region)
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	// The process's CPU, memory and descriptors and the Go runtime's
	// goroutines and GC, as Go services export them (the bench reads
	// process_cpu_seconds_total to split a point's CPU between the seller,
	// its generator and Redis). A registry that has them already keeps its
	// own.
	for _, c := range []prometheus.Collector{collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector()} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	m, err := newMetrics(reg, cfg.Region)
	if err != nil {
		return nil, err
	}
	pm, err := newPayMetrics(reg, cfg.Region)
	if err != nil {
		return nil, err
	}
	ident := deps.Identity
	if ident == nil {
		if cfg.InsecureDevIdentity {
			ident = InsecureDevIdentity{Region: cfg.Region}
		} else if ident, err = NewJWTIdentity(cfg.JWT); err != nil {
			return nil, fmt.Errorf("regional: %w", err)
		}
	}
	sales := NewSales()
	for _, spec := range cfg.Sales {
		if err := sales.Put(spec); err != nil {
			return nil, fmt.Errorf("regional: %w", err)
		}
	}
	s := &Server{
		cfg:         cfg,
		log:         log,
		reg:         reg,
		m:           m,
		store:       redisstore.NewStore(deps.Redis, cfg.Region).WithDurability(cfg.Durability),
		sales:       sales,
		ident:       ident,
		userLim:     newLimiter(cfg.UserRate, cfg.UserBurst),
		ipLim:       newLimiter(cfg.IPRate, cfg.IPBurst),
		kick:        make(chan struct{}, 1),
		demandTotal: map[string]int64{},
		pending:     map[string]int64{},
		gauged:      map[string]bool{},
		done:        make(chan struct{}),
		payment:     deps.Payment,
		lnGiven:     deps.Listener,
		pm:          pm,
	}
	if deps.Orders != nil {
		ocfg := orders.DefaultConfig()
		ocfg.Redis, ocfg.Store, ocfg.Registerer, ocfg.Logger = deps.Redis, deps.Orders, reg, log
		ocfg.Sales = sales.IDs
		ocfg.Consumer = fmt.Sprintf("%s-%s-%d", ocfg.Consumer, cfg.Region, consumerSeq.Add(1))
		if s.orders, err = orders.New(ocfg); err != nil {
			return nil, fmt.Errorf("regional: %w", err)
		}
	}
	for sale, ceiling := range cfg.StaticGrants {
		s.pending[sale] = ceiling
	}
	admCfg := cfg.Admission
	if admCfg == (LimitConfig{}) {
		admCfg = DefaultLimitConfig()
	}
	s.conns = newConnTracker()
	s.adm = newAdmission(admCfg, s.conns.recent)
	if err := m.registerAdmission(reg, cfg.Region, s.adm); err != nil {
		return nil, err
	}
	s.reserve = s.store
	if cfg.BatchReserve {
		s.batcher = redisstore.NewBatcher(s.store, redisstore.DefaultMaxBatch, redisstore.DefaultMaxInFlight)
		s.reserve = s.batcher
	}
	s.sweeper, err = NewSweeper(s.store, sales, SweeperConfig{
		Interval:   cfg.SweepInterval,
		Batch:      cfg.SweepBatch,
		MaxBatches: cfg.SweepMaxBatches,
		Timeout:    max(cfg.RedisTimeout, time.Second),
		Now:        cfg.now,
		OnExpired: func(sale string, n int) {
			m.expired.WithLabelValues(sale).Add(float64(n))
			if sl := sales.Get(sale); sl != nil {
				sl.MaybeAvailable()
			}
		},
		OnError: func(string, error) { m.storeErrors.WithLabelValues("expire").Inc() },
	}, log)
	if err != nil {
		return nil, fmt.Errorf("regional: %w", err)
	}
	s.handler = s.routes()
	if ident.Mode() == (InsecureDevIdentity{}).Mode() {
		log.Warn("INSECURE DEV IDENTITY: userId is taken from the request body with no proof; anyone can buy as anyone. Never run this in production.")
	}
	return s, nil
}

// Sales is the sale cache; an etcd watch keeps it current with Put and
// Remove.
func (s *Server) Sales() *Sales { return s.sales }

// Store is the Redis store the server sells from.
func (s *Server) Store() *redisstore.Store { return s.store }

// Handler is the HTTP API, for tests and for embedding in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the listener's address once started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Done is closed when the HTTP server stops serving; Err then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the error that stopped serving (nil after a clean shutdown).
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveErr
}

// Start listens, runs one readiness pass (so a server whose Redis is up is
// ready when Start returns) and starts the background loops. A Redis that
// is down does not fail Start: the server answers 503 until it is back.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("regional: server already started or closed")
	}
	ln := s.lnGiven
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.ListenAddr); err != nil {
			return fmt.Errorf("regional: listen %s: %w", s.cfg.ListenAddr, err)
		}
	}
	s.started, s.ln = true, ln
	ctx, s.cancel = context.WithCancel(ctx)
	s.hs = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnState:         s.conns.state,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	if err := s.startGossip(); err != nil {
		return err
	}
	s.maintain(ctx)
	s.refreshAll(ctx)
	if err := s.sweeper.Start(ctx); err != nil {
		return err
	}
	if s.orders != nil {
		if err := s.orders.Start(ctx); err != nil {
			return err
		}
	}
	s.wg.Add(5)
	go s.watchGrants(ctx)
	go s.loop(ctx, s.cfg.HealthInterval, nil, func(ctx context.Context) { s.maintain(ctx); s.shareLoad() })
	go s.loop(ctx, s.cfg.RefreshInterval, s.kick, s.refreshAll)
	go s.loop(ctx, min(s.cfg.RefreshInterval, DemandInterval), nil, s.flushDemand)
	go func() {
		defer s.wg.Done()
		<-ctx.Done()
		s.shutdownHTTP()
	}()
	go func() {
		err := s.hs.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else if err != nil {
			s.log.Error("HTTP server stopped", "err", err)
		}
		s.mu.Lock()
		s.serveErr = err
		s.mu.Unlock()
		close(s.done)
	}()
	s.log.Info("seller started", "addr", ln.Addr().String(), "identity", s.ident.Mode(),
		"sales", s.sales.IDs(), "ready", s.ready.Load(), "payment", s.payment != nil, "orders", s.orders != nil)
	return nil
}

func (s *Server) loop(ctx context.Context, every time.Duration, kick <-chan struct{}, f func(context.Context)) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		f(ctx)
	}
}

// DemandInterval is how often a seller hands its buy attempts to the agent
// (through Redis, or by gossip in a gossiping region), at the most.
const DemandInterval = 200 * time.Millisecond

func (s *Server) flushDemand(ctx context.Context) {
	if s.gossip != nil {
		s.publishDemand()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	if err := s.store.FlushDemand(ctx, &s.demand); err != nil {
		s.log.Debug("demand flush failed; kept for the next one", "err", err)
	}
}

func (s *Server) shutdownHTTP() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.hs.Shutdown(ctx); err != nil {
		s.log.Warn("HTTP shutdown did not drain in time", "err", err)
		_ = s.hs.Close()
	}
}

// Close drains in-flight requests (up to ShutdownTimeout) and stops the
// background loops. Safe to call twice and on nil.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started, cancel := s.started, s.cancel
	s.mu.Unlock()
	if started {
		cancel() // the ctx watcher shuts HTTP down
		s.wg.Wait()
		<-s.done
	} else if s.lnGiven != nil {
		_ = s.lnGiven.Close()
	}
	_ = s.sweeper.Close()
	if s.gossip != nil {
		_ = s.gossip.Close()
	}
	_ = s.batcher.Close()
	_ = s.orders.Close()
	return s.Err()
}

// Readiness is the answer of /readyz: every check's result.
type Readiness struct {
	Ready      bool   `json:"ready"`
	Redis      string `json:"redis"`
	Scripts    string `json:"scripts"`
	Durability string `json:"durability"`
	Grants     string `json:"grants"`
	Identity   string `json:"identity"`
	// Members are the region's live sellers and agent (gossip), when the
	// seller gossips; filled in when /readyz answers.
	Members []gossip.Member `json:"members,omitempty"`
}

// CheckReady runs the readiness checks now (and the repairs: reloading
// scripts Redis lost, applying static grants not yet applied).
func (s *Server) CheckReady(ctx context.Context) Readiness { return s.maintain(ctx) }

// LastReadiness is the result of the last maintenance pass (every
// HealthInterval), which is what /readyz answers: a probe only reads.
func (s *Server) LastReadiness() Readiness {
	s.healthM.Lock()
	defer s.healthM.Unlock()
	return s.last
}

func (s *Server) maintain(ctx context.Context) Readiness {
	s.healthM.Lock()
	defer s.healthM.Unlock()
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.RedisTimeout, time.Second))
	defer cancel()
	rd := Readiness{Redis: "unchecked", Scripts: "unchecked", Durability: "unchecked", Grants: "unchecked", Identity: s.ident.Mode()}
	defer func() {
		if rd.Ready != s.ready.Load() {
			s.log.Info("readiness changed", "ready", rd.Ready, "redis", rd.Redis, "scripts", rd.Scripts,
				"durability", rd.Durability, "grants", rd.Grants)
		}
		s.ready.Store(rd.Ready)
		if rd.Ready {
			s.m.ready.Set(1)
		} else {
			s.m.ready.Set(0)
		}
		s.last = rd
	}()

	loaded, err := s.store.ScriptsLoaded(ctx)
	if err != nil {
		rd.Redis = err.Error()
		if slowRedis(err) && s.ready.Load() && s.slowChecks < maxSlowChecks {
			// A check that only timed out says Redis was slow, not that it
			// is gone: under overload (measured with 8,000 connections on
			// two shared cores) the probe waited over a second and the
			// seller answered every buy not_ready for the next second, an
			// outage made by the probe. The hot path has its own deadlines
			// and answers; readiness holds for maxSlowChecks slow passes in
			// a row, then falls.
			s.slowChecks++
			rd.Ready = true
			rd.Redis = fmt.Sprintf("slow (%d of %d passes before not ready): %v", s.slowChecks, maxSlowChecks, err)
		}
		return rd
	}
	s.slowChecks = 0
	rd.Redis = "ok"
	if !loaded {
		// A restarted Redis forgot the scripts: load them again so the
		// hot path keeps using EVALSHA.
		if err := s.store.Load(ctx); err != nil {
			rd.Scripts = err.Error()
			return rd
		}
	}
	rd.Scripts = "ok"
	durable := true
	if err := s.store.Durability(ctx); err != nil {
		rd.Durability = err.Error()
		if s.cfg.AllowWeakDurability && errors.Is(err, redisstore.ErrNotDurable) {
			rd.Durability = "allowed weak durability: " + err.Error()
		} else {
			durable = false
		}
	} else {
		rd.Durability = "ok"
	}
	rd.Grants = "ok"
	for sale, ceiling := range s.pending {
		seen, err := s.store.ApplyGrant(ctx, sale, 0, ceiling)
		switch {
		case errors.Is(err, quota.ErrStaleFence):
			// A region agent owns this Redis: its grants win, ours is moot.
			s.log.Warn("static grant ignored: a region agent already applies grants to this Redis", "sale", sale, "ceiling", ceiling)
		case err != nil:
			rd.Grants = err.Error()
			continue
		default:
			s.log.Info("static grant applied", "sale", sale, "ceiling", ceiling, "granted_seen", seen)
		}
		delete(s.pending, sale)
	}
	rd.Ready = durable && rd.Grants == "ok"
	return rd
}

// maxSlowChecks is how many readiness passes in a row may time out on
// Redis before a ready seller says it is not ready.
const maxSlowChecks = 3

// slowRedis reports whether err is a Redis call that timed out (as
// opposed to one refused or a connection that failed).
func slowRedis(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refreshAll reads every sale's counters and the agent's view of the rest
// of the sale, all sales in one round trip, so cached stock flags follow
// grants, cancels and expiries made by anyone, and a dry region can tell
// its buyers whether the sale is sold out or quota is on its way.
func (s *Server) refreshAll(ctx context.Context) {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	ids := s.sales.IDs()
	sales := make([]*Sale, len(ids))
	marks := make([]int64, len(ids))
	for i, id := range ids {
		if sales[i] = s.sales.Get(id); sales[i] != nil {
			marks[i] = sales[i].marksNow()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, max(s.cfg.RedisTimeout, time.Second))
	stocks := s.store.Stocks(cctx, ids)
	cancel()
	known := make(map[string]bool, len(ids))
	for i, id := range ids {
		sale := sales[i]
		if sale == nil {
			continue
		}
		known[id] = true
		if stocks[i].Err != nil {
			if ctx.Err() == nil {
				s.m.storeErrors.WithLabelValues("counters").Inc()
			}
			continue
		}
		sale.observe(stocks[i], marks[i])
		s.publishStock(id, stocks[i])
		s.m.remaining.WithLabelValues(id).Set(float64(stocks[i].Counters.Available()))
		s.gauged[id] = true
	}
	// A removed sale must not linger in the metrics with its last value.
	for id := range s.gauged {
		if !known[id] {
			s.m.remaining.DeleteLabelValues(id)
			delete(s.gauged, id)
		}
	}
}

// watchGrants refreshes the counters as soon as the region's agent raises
// a grant (apply_grant.lua publishes the sale on layout.GrantsChannel), so buys
// held for quota resume within a Redis round trip of the grant rather than
// at the next refresh tick. One subscription per seller; a lost message
// costs only the wait until that tick. go-redis resubscribes after a
// reconnect by itself.
func (s *Server) watchGrants(ctx context.Context) {
	defer s.wg.Done()
	ps := s.store.SubscribeGrants(ctx)
	defer ps.Close()
	msgs := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			if s.sales.Get(m.Payload) != nil {
				s.kickRefresh()
			}
		}
	}
}

// kickRefresh asks for an early counter read, without waiting.
func (s *Server) kickRefresh() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.shopper(mux, http.MethodPost, "/v1/flash-sale/buy", "buy", s.buy)
	s.shopper(mux, http.MethodGet, "/v1/flash-sale/status", "status", s.status)
	s.shopper(mux, http.MethodPost, "/v1/flash-sale/reservations/{id}/confirm", "confirm", s.confirm)
	s.shopper(mux, http.MethodPost, "/v1/flash-sale/reservations/{id}/cancel", "cancel", s.cancelResv)
	s.shopper(mux, http.MethodGet, "/v1/flash-sale/requests/{requestId}", "request", s.requestOutcome)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeReply(w, success(http.StatusOK, "ok", map[string]string{"status": "ok"}))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rd := s.LastReadiness()
		rd.Members = s.Members()
		status := http.StatusOK
		if !rd.Ready {
			status = http.StatusServiceUnavailable
		}
		writeReply(w, success(status, "", rd))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openAPI)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeReply(w, fail(http.StatusNotFound, "not_found", "no route for %s %s: see /openapi.yaml", r.Method, r.URL.Path))
	})
	return mux
}

// shopper registers a shopper route: method and path answer through h,
// other methods on the path get a JSON 405, and each answer is counted.
func (s *Server) shopper(mux *http.ServeMux, method, path, route string, h func(http.ResponseWriter, *http.Request) reply) {
	mux.HandleFunc(method+" "+path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rep := h(w, r)
		if s.ident.Mode() == (InsecureDevIdentity{}).Mode() {
			w.Header().Set("X-Flashsale-Identity", "insecure-dev")
		}
		writeReply(w, rep)
		s.m.requests.WithLabelValues(route, rep.outcome).Inc()
		s.m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		writeReply(w, fail(http.StatusMethodNotAllowed, "method_not_allowed", "%s %s: use %s", r.Method, r.URL.Path, method))
	})
}

// warnThrottled logs a per-request failure at most once a second: during
// a Redis outage every request fails, and the log must not become the
// next outage.
func (s *Server) warnThrottled(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg+" (similar warnings suppressed for 1s)", args...)
}
