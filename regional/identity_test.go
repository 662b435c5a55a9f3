package regional

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

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
