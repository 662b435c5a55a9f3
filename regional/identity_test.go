package regional

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/golang-jwt/jwt/v5"
)

func identifyWith(t *testing.T, id Identity, auth, claimed string) (Principal, error) {
	t.Helper()
	r := httptest.NewRequest("POST", "/v1/flash-sale/buy", nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return id.Identify(r, claimed)
}

// TestJWTEd25519: EdDSA tokens verify against the public key; an HS256
// token made with the public key bytes as its secret (algorithm confusion)
// and a token signed by another key are refused.
func TestJWTEd25519(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewJWTIdentity(JWTConfig{Ed25519PublicKey: pub, Issuer: "shop-idp"})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "alice", "home_region": "us", "iss": "shop-idp", "exp": time.Now().Add(time.Hour).Unix()}
	good, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
	p, err := identifyWith(t, id, "bearer "+good, "")
	if err != nil || p != (Principal{User: "alice", HomeRegion: "us"}) {
		t.Fatalf("good EdDSA token: %+v, %v", p, err)
	}
	if _, err := identifyWith(t, id, "Bearer "+good, "alice"); err != nil {
		t.Fatalf("userId equal to sub refused: %v", err)
	}
	if _, err := identifyWith(t, id, "Bearer "+good, "bob"); !errors.Is(err, ErrUserMismatch) {
		t.Fatalf("userId other than sub: %v, want ErrUserMismatch", err)
	}

	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(pub))
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(other)
	claims["iss"] = "someone-else"
	wrongIss, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
	for name, tok := range map[string]string{"HS256 with the public key": confused, "another key": otherKey, "wrong issuer": wrongIss} {
		if _, err := identifyWith(t, id, "Bearer "+tok, ""); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v, want ErrBadToken", name, err)
		}
	}
	for _, auth := range []string{"", "Bearer ", "Basic YWxpY2U6cHc=", good} {
		if _, err := identifyWith(t, id, auth, ""); !errors.Is(err, ErrNoToken) {
			t.Errorf("Authorization %q: %v, want ErrNoToken", auth, err)
		}
	}
}

func TestJWTConfigValidate(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, c := range map[string]JWTConfig{
		"no key":       {},
		"short secret": {HS256Secret: []byte("short")},
		"both keys":    {HS256Secret: testSecret, Ed25519PublicKey: pub},
		"bad key size": {Ed25519PublicKey: pub[:16]},
	} {
		if _, err := NewJWTIdentity(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestInsecureIdentity(t *testing.T) {
	id := InsecureDevIdentity{Region: "eu"}
	if p, err := identifyWith(t, id, "", "alice"); err != nil || p != (Principal{User: "alice", HomeRegion: "eu"}) {
		t.Fatalf("%+v, %v", p, err)
	}
	if _, err := identifyWith(t, id, "", ""); !errors.Is(err, ErrNoUserID) {
		t.Fatalf("no userId: %v", err)
	}
}

// BenchmarkIdentify is the cost of one token check, per key type, and of
// a peek (the answers from memory).
func BenchmarkIdentify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	secret := make([]byte, 32)
	claims := jwt.MapClaims{"sub": "user-123456", "home_region": "eu", "exp": time.Now().Add(time.Hour).Unix()}
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	ed, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
	for _, tc := range []struct {
		name string
		cfg  JWTConfig
		tok  string
	}{{"hs256", JWTConfig{HS256Secret: secret}, hs}, {"ed25519", JWTConfig{Ed25519PublicKey: pub}, ed}} {
		b.Run(tc.name, func(b *testing.B) {
			id, err := NewJWTIdentity(tc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest("POST", "/v1/flash-sale/buy", nil)
			r.Header.Set("Authorization", "Bearer "+tc.tok)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := id.Identify(r, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("peek", func(b *testing.B) {
		id, _ := NewJWTIdentity(JWTConfig{HS256Secret: secret})
		r := httptest.NewRequest("POST", "/v1/flash-sale/buy", nil)
		r.Header.Set("Authorization", "Bearer "+hs)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := id.Peek(r, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestJWTHS256Checks: every part of an HS256 token is checked: its shape,
// its algorithm, its signature, and its claims (exp required, nbf, iss,
// aud, leeway); a good one passes, with fractional times too.
func TestJWTHS256Checks(t *testing.T) {
	id, err := NewJWTIdentity(JWTConfig{HS256Secret: testSecret, Issuer: "idp", Audience: "shop", Leeway: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := jwt.MapClaims{"sub": "alice", "home_region": "eu", "iss": "idp", "aud": "shop", "exp": now.Add(time.Hour).Unix()}
	sign := func(m jwt.SigningMethod, key any, edit func(jwt.MapClaims)) string {
		c := jwt.MapClaims{}
		for k, v := range good {
			c[k] = v
		}
		if edit != nil {
			edit(c)
		}
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs := func(edit func(jwt.MapClaims)) string { return sign(jwt.SigningMethodHS256, testSecret, edit) }
	ok := hs(nil)
	for name, tok := range map[string]string{
		"good":               ok,
		"aud in a list":      hs(func(c jwt.MapClaims) { c["aud"] = []string{"other", "shop"} }),
		"fractional exp":     hs(func(c jwt.MapClaims) { c["exp"] = float64(now.Add(time.Hour).Unix()) + 0.5 }),
		"expired in leeway":  hs(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Second).Unix() }),
		"nbf passed":         hs(func(c jwt.MapClaims) { c["nbf"] = now.Add(-time.Minute).Unix() }),
		"iat in the past":    hs(func(c jwt.MapClaims) { c["iat"] = now.Add(-time.Minute).Unix() }),
		"unknown claim kept": hs(func(c jwt.MapClaims) { c["scope"] = "buy" }),
	} {
		if p, err := identifyWith(t, id, "Bearer "+tok, ""); err != nil || p != (Principal{User: "alice", HomeRegion: "eu"}) {
			t.Errorf("%s: %+v, %v", name, p, err)
		}
	}
	head, rest, _ := strings.Cut(ok, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	enc := base64.RawURLEncoding.EncodeToString
	noneHead := enc([]byte(`{"alg":"none","typ":"JWT"}`))
	// signRaw signs a payload written by hand (what jwt.MapClaims cannot
	// hold: a claim named twice).
	signRaw := func(payload string) string {
		signing := head + "." + enc([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + enc(sig)
	}
	exp := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	if _, err := identifyWith(t, id, "Bearer "+signRaw(`{"sub":"alice","home_region":"eu","iss":"idp","aud":"shop","exp":`+exp+`}`), ""); err != nil {
		t.Fatalf("a hand-signed good token is refused: %v", err)
	}
	for name, tok := range map[string]string{
		"expired":              hs(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }),
		"no exp":               hs(func(c jwt.MapClaims) { delete(c, "exp") }),
		"nbf ahead":            hs(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }),
		"wrong issuer":         hs(func(c jwt.MapClaims) { c["iss"] = "other" }),
		"no audience":          hs(func(c jwt.MapClaims) { delete(c, "aud") }),
		"wrong audience":       hs(func(c jwt.MapClaims) { c["aud"] = "other" }),
		"exp not a number":     hs(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }),
		"HS512":                sign(jwt.SigningMethodHS512, testSecret, nil),
		"other secret":         sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-0123"), nil),
		"alg none":             noneHead + "." + payload + ".",
		"none header, HS sig":  noneHead + "." + payload + "." + sig,
		"payload swapped":      head + "." + enc([]byte(`{"sub":"mallory","home_region":"eu","iss":"idp","aud":"shop","exp":9999999999}`)) + "." + sig,
		"signature cut":        head + "." + payload + "." + sig[:len(sig)-2],
		"signature not base64": head + "." + payload + ".!!" + sig,
		"four parts":           ok + ".x",
		"two parts":            head + "." + payload,
		"header not JSON":      enc([]byte("not json")) + "." + payload + "." + sig,
		"header not base64":    "!!." + payload + "." + sig,
		"sub named twice":      signRaw(`{"sub":"alice","home_region":"eu","iss":"idp","aud":"shop","exp":` + exp + `,"sub":"mallory"}`),
		"payload not UTF-8":    signRaw("{\"sub\":\"alice\",\"home_region\":\"eu\",\"iss\":\"idp\",\"aud\":\"shop\",\"exp\":" + exp + ",\"name\":\"\xff\"}"),
	} {
		if _, err := identifyWith(t, id, "Bearer "+tok, ""); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v, want ErrBadToken", name, err)
		}
	}
}

// A time claim decodes the same whether it is written as an integer (the
// fast path) or as a float; null is absent, anything else is refused.
func TestClaimTimeDecoding(t *testing.T) {
	for in, want := range map[string]claimTime{
		`1796692398`:           1796692398,
		`-5`:                   -5,
		`1796692398.25`:        1796692398.25,
		`1.796692398e9`:        1796692398,
		`99999999999999999999`: 1e20,
		`null`:                 0,
	} {
		var c struct {
			Exp claimTime `json:"exp"`
		}
		if err := jsonv2.Unmarshal([]byte(`{"exp":`+in+`}`), &c); err != nil || c.Exp != want {
			t.Errorf("exp %s: %v, %v; want %v", in, c.Exp, err, want)
		}
	}
	for _, in := range []string{`"1796692398"`, `true`, `{}`, `[1]`} {
		var c struct {
			Exp claimTime `json:"exp"`
		}
		if err := jsonv2.Unmarshal([]byte(`{"exp":`+in+`}`), &c); err == nil {
			t.Errorf("exp %s: decoded as %v, want an error", in, c.Exp)
		}
	}
}
