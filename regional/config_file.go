package regional

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"flashsale/quota/layout"
	"flashsale/regional/gossip"
	"flashsale/regional/redisstore"
)

// FileConfig is the config file of `flashsale regional`, YAML or JSON (JSON
// is YAML). Unknown keys are errors, so a typo is not silently ignored.
// Times are RFC 3339, durations Go durations ("10m"). Example:
//
//	region: eu
//	listen: 0.0.0.0:8080
//	redis: 127.0.0.1:6379     # or, replicated: sentinel: {addrs: [h1:26379, h2:26379, h3:26379], masterName: eu}
//	durability: {mode: fsync} # or wait (replicas: 1, waitTimeout: 50ms), or wait+fsync
//	regions: {us: "https://us.shop.example"}
//	identity: {hs256SecretFile: /etc/flashsale/jwt.key}
//	sales:
//	  - {id: phone, total: 100, ceiling: 60, startsAt: "2026-11-24T12:00:00Z", reservationTTL: 10m}
type FileConfig struct {
	// Preset is "default" (production) or "dev"; the file's other
	// settings override it.
	Preset              string            `yaml:"preset"`
	Region              string            `yaml:"region"`
	Listen              string            `yaml:"listen"`
	Redis               string            `yaml:"redis"`
	Sentinel            FileSentinel      `yaml:"sentinel"`
	Durability          FileDurability    `yaml:"durability"`
	Regions             map[string]string `yaml:"regions"`
	AllowWeakDurability *bool             `yaml:"allowWeakDurability"`
	Identity            FileIdentity      `yaml:"identity"`
	RateLimit           FileRateLimit     `yaml:"rateLimit"`
	RedisTimeout        string            `yaml:"redisTimeout"`
	Sales               []FileSale        `yaml:"sales"`
	// Gossip joins the region's sellers' cluster (regional/gossip).
	Gossip *gossip.Settings `yaml:"gossip"`
}

// FileSentinel names a replicated Redis under Sentinel (instead of redis).
type FileSentinel struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"masterName"`
}

// FileDurability is Config.Durability: mode fsync, wait or wait+fsync;
// replicas and waitTimeout for the wait modes.
type FileDurability struct {
	Mode        string `yaml:"mode"`
	Replicas    int    `yaml:"replicas"`
	WaitTimeout string `yaml:"waitTimeout"`
}

// FileIdentity holds the token keys. Secrets are better kept in files (or
// the environment, see cmd/flashsale) than inline.
type FileIdentity struct {
	InsecureDev          bool   `yaml:"insecureDev"`
	HS256Secret          string `yaml:"hs256Secret"`
	HS256SecretFile      string `yaml:"hs256SecretFile"`
	Ed25519PublicKey     string `yaml:"ed25519PublicKey"` // PEM, or base64 of the 32 raw bytes
	Ed25519PublicKeyFile string `yaml:"ed25519PublicKeyFile"`
	Issuer               string `yaml:"issuer"`
	Audience             string `yaml:"audience"`
}

// FileRateLimit overrides the token buckets; absent fields keep the preset.
type FileRateLimit struct {
	UserRate          *float64 `yaml:"userRate"`
	UserBurst         *int     `yaml:"userBurst"`
	IPRate            *float64 `yaml:"ipRate"`
	IPBurst           *int     `yaml:"ipBurst"`
	TrustForwardedFor *bool    `yaml:"trustForwardedFor"`
}

// FileSale is a sale and, when no coordinator runs, this region's ceiling.
type FileSale struct {
	ID             string `yaml:"id"`
	Total          int64  `yaml:"total"`
	PerUserLimit   int64  `yaml:"perUserLimit"`
	StartsAt       string `yaml:"startsAt"`
	EndsAt         string `yaml:"endsAt"`
	ReservationTTL string `yaml:"reservationTTL"`
	State          string `yaml:"state"`
	// Ceiling, when set, is applied once at start with fence 0 (no
	// coordinator). Leave it out when a region agent applies grants.
	Ceiling *int64 `yaml:"ceiling"`
}

// LoadFile reads and parses a config file.
func LoadFile(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	f, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	// Key files named relative to the config file are found next to it.
	dir := filepath.Dir(path)
	files := []*string{&f.Identity.HS256SecretFile, &f.Identity.Ed25519PublicKeyFile}
	if f.Gossip != nil {
		files = append(files, &f.Gossip.KeysFile)
	}
	for _, p := range files {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return f, nil
}

// ParseFile parses config file contents.
func ParseFile(b []byte) (*FileConfig, error) {
	var f FileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return &f, nil
}

// Config builds a Config: the preset, then the file's settings. Validate
// the result after any further overrides (flags, environment).
func (f *FileConfig) Config() (Config, error) {
	var c Config
	switch f.Preset {
	case "", "default":
		c = DefaultConfig()
	case "dev":
		c = DevConfig()
	default:
		return c, fmt.Errorf("preset %q: want default or dev", f.Preset)
	}
	if f.Region != "" {
		c.Region = f.Region
	}
	if f.Listen != "" {
		c.ListenAddr = f.Listen
	}
	if f.Redis != "" {
		c.RedisAddr = f.Redis
	}
	if len(f.Sentinel.Addrs) > 0 || f.Sentinel.MasterName != "" {
		c.RedisSentinels, c.RedisMasterName = f.Sentinel.Addrs, f.Sentinel.MasterName
	}
	if f.Durability != (FileDurability{}) {
		mode, err := redisstore.ParseDurabilityMode(f.Durability.Mode)
		if err != nil {
			return c, err
		}
		c.Durability = redisstore.Durability{Mode: mode, Replicas: f.Durability.Replicas}
		if f.Durability.WaitTimeout != "" {
			if c.Durability.WaitTimeout, err = time.ParseDuration(f.Durability.WaitTimeout); err != nil {
				return c, fmt.Errorf("durability.waitTimeout %q: %w", f.Durability.WaitTimeout, err)
			}
		}
	}
	if len(f.Regions) > 0 {
		c.Regions = map[string]string{}
		for k, v := range f.Regions {
			c.Regions[k] = strings.TrimRight(v, "/")
		}
	}
	if f.Gossip != nil {
		g, err := f.Gossip.Config()
		if err != nil {
			return c, err
		}
		c.Gossip = g
	}
	if f.AllowWeakDurability != nil {
		c.AllowWeakDurability = *f.AllowWeakDurability
	}
	if f.RedisTimeout != "" {
		d, err := time.ParseDuration(f.RedisTimeout)
		if err != nil {
			return c, fmt.Errorf("redisTimeout %q: %w", f.RedisTimeout, err)
		}
		c.RedisTimeout = d
	}
	rl := f.RateLimit
	setIf(&c.UserRate, rl.UserRate)
	setIf(&c.UserBurst, rl.UserBurst)
	setIf(&c.IPRate, rl.IPRate)
	setIf(&c.IPBurst, rl.IPBurst)
	setIf(&c.TrustForwardedFor, rl.TrustForwardedFor)
	if err := f.Identity.apply(&c); err != nil {
		return c, fmt.Errorf("identity: %w", err)
	}
	for i, s := range f.Sales {
		spec, err := s.spec()
		if err != nil {
			return c, fmt.Errorf("sales[%d]: %w", i, err)
		}
		c.Sales = append(c.Sales, spec)
		if s.Ceiling != nil {
			if c.StaticGrants == nil {
				c.StaticGrants = map[string]int64{}
			}
			c.StaticGrants[s.ID] = *s.Ceiling
		}
	}
	return c, nil
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func (fi *FileIdentity) apply(c *Config) error {
	c.InsecureDevIdentity = fi.InsecureDev
	c.JWT.Issuer, c.JWT.Audience = fi.Issuer, fi.Audience
	if fi.HS256Secret != "" && fi.HS256SecretFile != "" {
		return errors.New("hs256Secret and hs256SecretFile are both set: keep one")
	}
	if fi.Ed25519PublicKey != "" && fi.Ed25519PublicKeyFile != "" {
		return errors.New("ed25519PublicKey and ed25519PublicKeyFile are both set: keep one")
	}
	if fi.HS256Secret != "" {
		c.JWT.HS256Secret = []byte(fi.HS256Secret)
	}
	if fi.HS256SecretFile != "" {
		b, err := os.ReadFile(fi.HS256SecretFile)
		if err != nil {
			return fmt.Errorf("hs256SecretFile: %w", err)
		}
		c.JWT.HS256Secret = bytes.TrimSpace(b)
	}
	key := fi.Ed25519PublicKey
	if fi.Ed25519PublicKeyFile != "" {
		b, err := os.ReadFile(fi.Ed25519PublicKeyFile)
		if err != nil {
			return fmt.Errorf("ed25519PublicKeyFile: %w", err)
		}
		key = string(b)
	}
	if key != "" {
		pub, err := ParseEd25519PublicKey(key)
		if err != nil {
			return err
		}
		c.JWT.Ed25519PublicKey = pub
	}
	return nil
}

// ParseEd25519PublicKey reads a PEM "PUBLIC KEY" (PKIX) or the base64 of
// the 32 raw key bytes.
func ParseEd25519PublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ed25519 public key PEM: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("ed25519 public key PEM holds a %T, not an Ed25519 key", k)
		}
		return pub, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("ed25519 public key: neither PEM nor base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ed25519 public key: %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func (s FileSale) spec() (layout.SaleSpec, error) {
	spec := layout.SaleSpec{ID: s.ID, Total: s.Total, PerUserLimit: s.PerUserLimit, State: layout.SaleState(s.State)}
	var err error
	if s.StartsAt == "" {
		return spec, fmt.Errorf("sale %q: startsAt is required (RFC 3339, e.g. 2026-11-24T12:00:00Z)", s.ID)
	}
	if spec.StartsAt, err = time.Parse(time.RFC3339, s.StartsAt); err != nil {
		return spec, fmt.Errorf("sale %q: startsAt %q: want RFC 3339: %w", s.ID, s.StartsAt, err)
	}
	if s.EndsAt != "" {
		if spec.EndsAt, err = time.Parse(time.RFC3339, s.EndsAt); err != nil {
			return spec, fmt.Errorf("sale %q: endsAt %q: want RFC 3339: %w", s.ID, s.EndsAt, err)
		}
	}
	if s.ReservationTTL != "" {
		if spec.ReservationTTL, err = time.ParseDuration(s.ReservationTTL); err != nil {
			return spec, fmt.Errorf("sale %q: reservationTTL %q: %w", s.ID, s.ReservationTTL, err)
		}
	}
	if s.Ceiling != nil && *s.Ceiling > s.Total {
		return spec, fmt.Errorf("sale %q: ceiling %d is above total %d", s.ID, *s.Ceiling, s.Total)
	}
	return spec, nil
}
