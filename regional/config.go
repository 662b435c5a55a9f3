package regional

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"flashsale/quota/layout"
	"flashsale/regional/gossip"
	"flashsale/regional/redisstore"
)

// Config is one seller's configuration. Start from DefaultConfig or
// DevConfig, set Region and the identity keys, and override what differs.
type Config struct {
	// Region is the region this seller serves; required. Users whose token
	// names another home region are redirected to that region's endpoint.
	Region string
	// ListenAddr is where the shopper HTTP API listens (host:port; port 0
	// picks a free one).
	ListenAddr string
	// RedisAddr is the region's Redis, dialled by cmd/flashsale. The Server
	// itself uses the client handed to it in Deps.
	RedisAddr string
	// RedisSentinels and RedisMasterName, when set, name a replicated
	// Redis under Sentinel instead of RedisAddr: cmd/flashsale dials it
	// with go-redis's failover client (redisstore.Conn).
	RedisSentinels  []string
	RedisMasterName string
	// Durability is when a write counts as done (DESIGN I4): fsync (the
	// default), wait (WAIT on replicas) or both; readiness checks that
	// Redis runs accordingly.
	Durability redisstore.Durability
	// Regions maps other regions' names to their shopper base URLs
	// (scheme://host[:port], no trailing slash), for the 307 redirect of a
	// user whose home is elsewhere.
	Regions map[string]string

	// Sales are the sales this seller knows at start. More can be added
	// and removed later through Server.Sales().
	Sales []layout.SaleSpec
	// StaticGrants gives a sale's ceiling in this region when no
	// coordinator runs: applied once at start with fence 0 (a max-merge, so
	// a restart repeats it harmlessly). Leave it empty when a region agent
	// applies grants from etcd.
	StaticGrants map[string]int64

	// JWT verifies shopper tokens. Ignored when InsecureDevIdentity is set.
	JWT JWTConfig
	// InsecureDevIdentity takes the user id from the request body with no
	// proof at all. For local development only: logged loudly and shown
	// in every status answer.
	InsecureDevIdentity bool
	// AllowWeakDurability lets /readyz pass when Redis does not run with
	// appendfsync always, so a crash may lose acknowledged reservations
	// (DESIGN I4). For benchmarks and development only.
	AllowWeakDurability bool

	// MaxBodyBytes caps a request body; above it the answer is 413.
	MaxBodyBytes int64
	// RedisTimeout bounds one store call made for a request, so an answer
	// stays within the latency budget even when Redis stalls.
	RedisTimeout time.Duration
	// Admission is the adaptive concurrency limit taken before any Redis
	// work, per sale and for the region's Redis (admission.go); the zero
	// value is DefaultLimitConfig. A request's deadline for its Redis work
	// is RedisTimeout from its admission.
	Admission LimitConfig
	// BatchReserve coalesces concurrent reserve attempts into one script
	// call (DESIGN §5 step 6).
	BatchReserve bool
	// RefreshInterval is how often each sale's counters are read, so a
	// sold-out flag learned from a script answer is cleared once stock
	// returns (a larger grant, a cancel, an expiry). With Gossip, every
	// seller's read reaches the others, so this is a safety net (1 s).
	RefreshInterval time.Duration
	// Gossip makes the region's sellers one memberlist cluster
	// (regional/gossip; Region and Role are filled in): sale state spreads
	// between them and the per-user and per-IP limits hold per region. Nil
	// runs the seller alone.
	Gossip *gossip.Config
	// QuotaWait is how long a buy that finds this region dry while the
	// sale has stock (quota_pending) is held for quota to arrive before it
	// is answered 503; a grant published by the agent ends the wait at
	// once. It spends part of the 200 ms answer budget, so at most 150 ms;
	// 0 answers at once.
	QuotaWait time.Duration
	// HealthInterval is how often Redis reachability, the script cache and
	// durability are checked (scripts are reloaded when Redis lost them).
	HealthInterval time.Duration

	// SweepInterval, SweepBatch and SweepMaxBatches bound reservation
	// expiry: every interval, per sale, at most SweepMaxBatches calls of
	// SweepBatch reservations each.
	SweepInterval   time.Duration
	SweepBatch      int
	SweepMaxBatches int

	// UserRate and UserBurst are the per-user token bucket (requests per
	// second, bucket size); IPRate and IPBurst the per-client-IP one.
	// A rate of 0 disables that limit.
	UserRate  float64
	UserBurst int
	IPRate    float64
	IPBurst   int
	// TrustForwardedFor takes the client IP from the last X-Forwarded-For
	// entry (the one our own load balancer appended). Only set it behind
	// a proxy that always writes the header.
	TrustForwardedFor bool

	// ShutdownTimeout bounds the graceful drain of in-flight requests.
	ShutdownTimeout time.Duration

	// PaymentAmount is what confirming one reservation charges, in minor
	// units (cents), when Deps.Payment is set: a sale spec carries no price.
	PaymentAmount int64
	// PaymentTimeout bounds one payment call; a call that runs out is
	// treated as the provider being unavailable (the retry reuses the
	// payment id, so a charge that did go through is not repeated).
	PaymentTimeout time.Duration

	// Now is the clock; tests inject one. Nil: time.Now.
	Now func() time.Time
}

// JWTConfig says how shopper tokens are verified. Exactly one key is set.
type JWTConfig struct {
	// HS256Secret is a shared secret of at least 32 bytes.
	HS256Secret []byte
	// Ed25519PublicKey verifies EdDSA tokens signed by the identity service.
	Ed25519PublicKey ed25519.PublicKey
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew on exp and nbf.
	Leeway time.Duration
}

// maxQuotaWait bounds Config.QuotaWait: a held buy must still be answered
// within the 200 ms budget, Redis call included.
const maxQuotaWait = 150 * time.Millisecond

// DefaultConfig is a production starting point.
func DefaultConfig() Config {
	return Config{
		ListenAddr:      "127.0.0.1:8080",
		RedisAddr:       "127.0.0.1:6379",
		MaxBodyBytes:    4 << 10,
		RedisTimeout:    150 * time.Millisecond,
		BatchReserve:    true,
		Admission:       DefaultLimitConfig(),
		RefreshInterval: 200 * time.Millisecond,
		QuotaWait:       100 * time.Millisecond,
		HealthInterval:  time.Second,
		SweepInterval:   time.Second,
		SweepBatch:      200,
		SweepMaxBatches: 10,
		UserRate:        2,
		UserBurst:       5,
		IPRate:          50,
		IPBurst:         100,
		ShutdownTimeout: 10 * time.Second,
		PaymentAmount:   100,
		PaymentTimeout:  3 * time.Second,
		JWT:             JWTConfig{Leeway: 5 * time.Second},
	}
}

// DevConfig suits one machine and tests: any free port, faster health and
// sweep loops, generous Redis timeout (2 shared cores), no per-IP limit
// (every local client shares 127.0.0.1).
func DevConfig() Config {
	c := DefaultConfig()
	c.ListenAddr = "127.0.0.1:0"
	c.RedisTimeout = 2 * time.Second
	c.HealthInterval = 200 * time.Millisecond
	c.SweepInterval = 200 * time.Millisecond
	c.IPRate = 0
	c.ShutdownTimeout = 2 * time.Second
	return c
}

// redisConn is how cmd/flashsale reaches the region's Redis.
func (c *Config) redisConn() redisstore.Conn {
	return redisstore.Conn{Addr: c.RedisAddr, Sentinels: c.RedisSentinels, MasterName: c.RedisMasterName}
}

// RedisConn is how the region's Redis is reached, with password (from the
// environment, never the config file).
func (c *Config) RedisConn(password string) redisstore.Conn {
	rc := c.redisConn()
	rc.Password = password
	return rc
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case !validRegion(c.Region):
		return fmt.Errorf("regional config: Region %q: want 1-64 characters of [a-z0-9_-]", c.Region)
	case c.MaxBodyBytes < 256:
		return fmt.Errorf("regional config: MaxBodyBytes %d: want at least 256", c.MaxBodyBytes)
	case c.Durability.Validate() != nil:
		return fmt.Errorf("regional config: %w", c.Durability.Validate())
	case c.redisConn().Validate() != nil:
		return fmt.Errorf("regional config: %w", c.redisConn().Validate())
	case c.RedisTimeout <= 0:
		return fmt.Errorf("regional config: RedisTimeout %v: want > 0", c.RedisTimeout)
	case c.Admission != (LimitConfig{}) && !c.Admission.valid():
		return fmt.Errorf("regional config: Admission %+v: want 1 <= Min <= Initial <= Max, Target > 0, 0 < Backoff < 1, Queue >= 0", c.Admission)
	case c.RefreshInterval <= 0:
		return fmt.Errorf("regional config: RefreshInterval %v: want > 0", c.RefreshInterval)
	case c.QuotaWait < 0 || c.QuotaWait > maxQuotaWait:
		return fmt.Errorf("regional config: QuotaWait %v: want 0 (no hold) to %v (the hold spends the 200 ms answer budget)", c.QuotaWait, maxQuotaWait)
	case c.HealthInterval <= 0:
		return fmt.Errorf("regional config: HealthInterval %v: want > 0", c.HealthInterval)
	case c.SweepInterval <= 0:
		return fmt.Errorf("regional config: SweepInterval %v: want > 0", c.SweepInterval)
	case c.SweepBatch < 1:
		return fmt.Errorf("regional config: SweepBatch %d: want >= 1", c.SweepBatch)
	case c.SweepMaxBatches < 1:
		return fmt.Errorf("regional config: SweepMaxBatches %d: want >= 1", c.SweepMaxBatches)
	case c.UserRate < 0 || (c.UserRate > 0 && c.UserBurst < 1):
		return fmt.Errorf("regional config: UserRate %v / UserBurst %d: want rate >= 0 and, with a rate, burst >= 1", c.UserRate, c.UserBurst)
	case c.IPRate < 0 || (c.IPRate > 0 && c.IPBurst < 1):
		return fmt.Errorf("regional config: IPRate %v / IPBurst %d: want rate >= 0 and, with a rate, burst >= 1", c.IPRate, c.IPBurst)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("regional config: ShutdownTimeout %v: want > 0", c.ShutdownTimeout)
	case c.PaymentAmount <= 0:
		return fmt.Errorf("regional config: PaymentAmount %d: want > 0 (minor units charged per confirmed reservation)", c.PaymentAmount)
	case c.PaymentTimeout <= 0:
		return fmt.Errorf("regional config: PaymentTimeout %v: want > 0", c.PaymentTimeout)
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return fmt.Errorf("regional config: ListenAddr %q: %w", c.ListenAddr, err)
	}
	for name, endpoint := range c.Regions {
		if !validRegion(name) {
			return fmt.Errorf("regional config: Regions: region name %q: want 1-64 characters of [a-z0-9_-]", name)
		}
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("regional config: Regions[%s] %q: want an http(s) base URL such as https://us.shop.example", name, endpoint)
		}
	}
	seen := map[string]bool{}
	for i := range c.Sales {
		if err := checkSpec(&c.Sales[i]); err != nil {
			return fmt.Errorf("regional config: Sales[%d]: %w", i, err)
		}
		if seen[c.Sales[i].ID] {
			return fmt.Errorf("regional config: Sales[%d]: sale %q listed twice", i, c.Sales[i].ID)
		}
		seen[c.Sales[i].ID] = true
	}
	for sale, ceiling := range c.StaticGrants {
		if !seen[sale] {
			return fmt.Errorf("regional config: StaticGrants[%q]: no such sale in Sales", sale)
		}
		if ceiling < 0 {
			return fmt.Errorf("regional config: StaticGrants[%q] %d: want >= 0", sale, ceiling)
		}
	}
	if !c.InsecureDevIdentity {
		if err := c.JWT.validate(); err != nil {
			return fmt.Errorf("regional config: %w", err)
		}
	}
	return nil
}

func (j *JWTConfig) validate() error {
	hasHS, hasEd := len(j.HS256Secret) > 0, len(j.Ed25519PublicKey) > 0
	switch {
	case !hasHS && !hasEd:
		return errors.New("JWT: no key: set an HS256 secret or an Ed25519 public key (or InsecureDevIdentity for local development)")
	case hasHS && hasEd:
		return errors.New("JWT: both an HS256 secret and an Ed25519 public key are set: keep one")
	case hasHS && len(j.HS256Secret) < 32:
		return fmt.Errorf("JWT: HS256 secret is %d bytes: want at least 32", len(j.HS256Secret))
	case hasEd && len(j.Ed25519PublicKey) != ed25519.PublicKeySize:
		return fmt.Errorf("JWT: Ed25519 public key is %d bytes: want %d", len(j.Ed25519PublicKey), ed25519.PublicKeySize)
	case j.Leeway < 0:
		return fmt.Errorf("JWT: Leeway %v: want >= 0", j.Leeway)
	}
	return nil
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func validRegion(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}
