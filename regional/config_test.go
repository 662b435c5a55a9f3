package regional

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"flashsale/quota/layout"
)

func validConfig() Config {
	c := DevConfig()
	c.Region = "eu"
	c.JWT.HS256Secret = testSecret
	return c
}

// TestConfigValidate: each bad value is refused with a message naming it.
func TestConfigValidate(t *testing.T) {
	if c := validConfig(); c.Validate() != nil {
		t.Fatalf("valid config refused: %v", c.Validate())
	}
	start := time.Unix(10_000, 0)
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Region = "EU West" }, `Region "EU West"`},
		{func(c *Config) { c.ListenAddr = "8080" }, `ListenAddr "8080"`},
		{func(c *Config) { c.RedisTimeout = 0 }, "RedisTimeout 0s"},
		{func(c *Config) { c.SweepBatch = 0 }, "SweepBatch 0"},
		{func(c *Config) { c.UserRate, c.UserBurst = 5, 0 }, "UserBurst 0"},
		{func(c *Config) { c.Regions = map[string]string{"us": "us.shop.example"} }, `Regions[us] "us.shop.example"`},
		{func(c *Config) { c.JWT = JWTConfig{} }, "no key"},
		{func(c *Config) { c.JWT.HS256Secret = []byte("abc") }, "HS256 secret is 3 bytes"},
		{func(c *Config) { c.Sales = []layout.SaleSpec{{ID: "a/b", StartsAt: start}} }, `sale id "a/b"`},
		{func(c *Config) {
			c.Sales = []layout.SaleSpec{{ID: "s", StartsAt: start}, {ID: "s", StartsAt: start}}
		}, `sale "s" listed twice`},
		{func(c *Config) { c.StaticGrants = map[string]int64{"ghost": 5} }, `StaticGrants["ghost"]`},
	} {
		c := validConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
	c := validConfig()
	c.JWT = JWTConfig{}
	c.InsecureDevIdentity = true
	if err := c.Validate(); err != nil {
		t.Fatalf("insecure dev identity needs no key: %v", err)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.key"), append(testSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	gossipKey := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	if err := os.WriteFile(filepath.Join(dir, "gossip.keys"), []byte(gossipKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "eu.yaml")
	yaml := `
preset: dev
region: eu
listen: 127.0.0.1:0
redis: 127.0.0.1:7000
regions: {us: "https://us.shop.example/"}
identity: {hs256SecretFile: jwt.key, issuer: idp}
rateLimit: {userRate: 3, userBurst: 4}
gossip: {bind: "127.0.0.1:7946", seeds: ["10.0.0.2:7946"], keysFile: gossip.keys}
sales:
  - {id: phone, total: 100, ceiling: 60, startsAt: "2026-11-24T12:00:00Z", endsAt: "2026-11-24T13:00:00Z", reservationTTL: 5m}
  - {id: tv, total: 5, perUserLimit: 2, startsAt: "2026-11-24T12:00:00Z", state: paused}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Region != "eu" || c.ListenAddr != "127.0.0.1:0" || c.RedisAddr != "127.0.0.1:7000":
		t.Fatalf("addresses: %+v", c)
	case c.Regions["us"] != "https://us.shop.example":
		t.Fatalf("regions %v: trailing slash kept", c.Regions)
	case string(c.JWT.HS256Secret) != string(testSecret) || c.JWT.Issuer != "idp":
		t.Fatalf("JWT %+v", c.JWT)
	case c.UserRate != 3 || c.UserBurst != 4 || c.IPRate != 0:
		t.Fatalf("rate limits %v/%d, ip %v", c.UserRate, c.UserBurst, c.IPRate)
	case len(c.Sales) != 2 || c.Sales[0].ReservationTTL != 5*time.Minute || c.Sales[1].State != layout.SalePaused:
		t.Fatalf("sales %+v", c.Sales)
	case len(c.StaticGrants) != 1 || c.StaticGrants["phone"] != 60:
		t.Fatalf("static grants %v", c.StaticGrants)
	case !c.Sales[0].StartsAt.Equal(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)):
		t.Fatalf("startsAt %v", c.Sales[0].StartsAt)
	case c.Gossip == nil || c.Gossip.BindPort != 7946 || len(c.Gossip.Seeds) != 1 || len(c.Gossip.Keys) != 1 || string(c.Gossip.Keys[0]) != strings.Repeat("k", 32):
		t.Fatalf("gossip %+v: want bind port 7946, one seed, the key file read relative to the config", c.Gossip)
	}

	// JSON is YAML.
	j, err := ParseFile([]byte(`{"region":"us","identity":{"insecureDev":true},"sales":[{"id":"s","total":1,"startsAt":"2026-11-24T12:00:00Z"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := j.Config(); err != nil || c.Region != "us" || !c.InsecureDevIdentity || len(c.Sales) != 1 {
		t.Fatalf("JSON config: %+v, %v", c, err)
	}

	for bad, want := range map[string]string{
		`regoin: eu`:       "regoin",
		`preset: fast`:     `preset "fast"`,
		`redisTimeout: 5x`: `redisTimeout "5x"`,
		`sales: [{id: s, total: 1, startsAt: "noon"}]`:                                       `startsAt "noon"`,
		`sales: [{id: s, total: 1}]`:                                                         "startsAt is required",
		`sales: [{id: s, total: 1, startsAt: "2026-11-24T12:00:00Z", ceiling: 2}]`:           "ceiling 2 is above total 1",
		`sales: [{id: s, total: 1, startsAt: "2026-11-24T12:00:00Z", reservationTTL: soon}]`: `reservationTTL "soon"`,
		`identity: {hs256Secret: a, hs256SecretFile: b}`:                                     "both set",
		`identity: {ed25519PublicKey: "!!"}`:                                                 "ed25519 public key",
		`gossip: {bind: "7946"}`:                                                             "want host:port",
	} {
		f, err := ParseFile([]byte(bad))
		if err == nil {
			_, err = f.Config()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error naming %s", bad, err, want)
		}
	}
}

func TestParseEd25519PublicKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, s := range []string{pemKey, base64.StdEncoding.EncodeToString(pub)} {
		got, err := ParseEd25519PublicKey(s)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("parse %q: %v", s, err)
		}
	}
	if _, err := ParseEd25519PublicKey(base64.StdEncoding.EncodeToString(pub[:31])); err == nil {
		t.Fatal("31-byte key accepted")
	}
}
