package regional

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Identity errors the funnel maps to answers.
var (
	ErrNoToken      = errors.New("no bearer token")            // 401
	ErrBadToken     = errors.New("invalid token")              // 401
	ErrUserMismatch = errors.New("userId differs from token")  // 403
	ErrNoUserID     = errors.New("userId required (dev mode)") // 400
)

// Principal is who is calling and which region sells to them (DESIGN I3).
type Principal struct {
	User       string
	HomeRegion string
}

// Identity tells who sent a request. claimedUser is the userId from the
// body or query ("" when absent). The two implementations are JWTIdentity
// (production) and InsecureDevIdentity (local development).
type Identity interface {
	Identify(r *http.Request, claimedUser string) (Principal, error)
	// Mode names the implementation for /status and logs.
	Mode() string
}

// JWTIdentity verifies a signed bearer token: `sub` is the user and the
// `home_region` claim the only region allowed to sell to them.
type JWTIdentity struct {
	parser *jwt.Parser
	key    any
}

type shopperClaims struct {
	jwt.RegisteredClaims
	HomeRegion string `json:"home_region"`
}

// NewJWTIdentity builds a verifier from one key: HS256 or Ed25519.
func NewJWTIdentity(cfg JWTConfig) (*JWTIdentity, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(cfg.Leeway)}
	var key any
	if len(cfg.HS256Secret) > 0 {
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}))
		key = append([]byte(nil), cfg.HS256Secret...)
	} else {
		opts = append(opts, jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}))
		key = ed25519.PublicKey(append([]byte(nil), cfg.Ed25519PublicKey...))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &JWTIdentity{parser: jwt.NewParser(opts...), key: key}, nil
}

// Mode implements Identity.
func (*JWTIdentity) Mode() string { return "jwt" }

// Identify implements Identity.
func (j *JWTIdentity) Identify(r *http.Request, claimedUser string) (Principal, error) {
	raw, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found {
		// RFC 6750 scheme names are case-insensitive.
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			raw, found = h[7:], true
		}
	}
	raw = strings.TrimSpace(raw)
	if !found || raw == "" {
		return Principal{}, ErrNoToken
	}
	var c shopperClaims
	// The parser checks the algorithm against WithValidMethods before it
	// calls this, so an HS256 token is never checked with a public key.
	_, err := j.parser.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return j.key, nil })
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	switch {
	case !validID(c.Subject):
		return Principal{}, fmt.Errorf("%w: sub %q is not a valid user id", ErrBadToken, c.Subject)
	case !validRegion(c.HomeRegion):
		return Principal{}, fmt.Errorf("%w: home_region %q is missing or not a region name", ErrBadToken, c.HomeRegion)
	case claimedUser != "" && claimedUser != c.Subject:
		return Principal{}, ErrUserMismatch
	}
	return Principal{User: c.Subject, HomeRegion: c.HomeRegion}, nil
}

// InsecureDevIdentity believes the userId in the request and makes every
// user local. Anyone can buy as anyone: local development only.
type InsecureDevIdentity struct{ Region string }

// Mode implements Identity.
func (InsecureDevIdentity) Mode() string { return "insecure-dev" }

// Identify implements Identity.
func (d InsecureDevIdentity) Identify(_ *http.Request, claimedUser string) (Principal, error) {
	if claimedUser == "" {
		return Principal{}, ErrNoUserID
	}
	return Principal{User: claimedUser, HomeRegion: d.Region}, nil
}
