package regional

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
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
	// Peek reads who the caller says they are without checking the
	// signature, at a tenth of Identify's cost. Only for answers that are
	// public and change nothing (sale not started, ended, sold out), so
	// that the crowd hammering before the opening and after the sellout
	// costs no signature check; the home region it gives still sends
	// buyers of other regions to theirs, which checks the token.
	Peek(r *http.Request, claimedUser string) (Principal, error)
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
	raw, err := bearerToken(r)
	if err != nil {
		return Principal{}, err
	}
	var c shopperClaims
	// The parser checks the algorithm against WithValidMethods before it
	// calls this, so an HS256 token is never checked with a public key.
	if _, err := j.parser.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return j.key, nil }); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	return principal(c.Subject, c.HomeRegion, claimedUser)
}

// Peek implements Identity: the token's payload, decoded but not verified.
func (*JWTIdentity) Peek(r *http.Request, claimedUser string) (Principal, error) {
	raw, err := bearerToken(r)
	if err != nil {
		return Principal{}, err
	}
	_, rest, ok1 := strings.Cut(raw, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return Principal{}, fmt.Errorf("%w: not a JWT (header.payload.signature)", ErrBadToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: payload: %w", ErrBadToken, err)
	}
	var c struct {
		Subject    string `json:"sub"`
		HomeRegion string `json:"home_region"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Principal{}, fmt.Errorf("%w: payload: %w", ErrBadToken, err)
	}
	return principal(c.Subject, c.HomeRegion, claimedUser)
}

// bearerToken is the request's bearer token, or ErrNoToken.
func bearerToken(r *http.Request) (string, error) {
	raw, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found {
		// RFC 6750 scheme names are case-insensitive.
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			raw, found = h[7:], true
		}
	}
	raw = strings.TrimSpace(raw)
	if !found || raw == "" {
		return "", ErrNoToken
	}
	return raw, nil
}

// principal checks a token's claims against each other and the request.
func principal(sub, home, claimedUser string) (Principal, error) {
	switch {
	case !validID(sub):
		return Principal{}, fmt.Errorf("%w: sub %q is not a valid user id", ErrBadToken, sub)
	case !validRegion(home):
		return Principal{}, fmt.Errorf("%w: home_region %q is missing or not a region name", ErrBadToken, home)
	case claimedUser != "" && claimedUser != sub:
		return Principal{}, ErrUserMismatch
	}
	return Principal{User: sub, HomeRegion: home}, nil
}

// InsecureDevIdentity believes the userId in the request and makes every
// user local. Anyone can buy as anyone: local development only.
type InsecureDevIdentity struct{ Region string }

// Mode implements Identity.
func (InsecureDevIdentity) Mode() string { return "insecure-dev" }

// Peek implements Identity: the same as Identify, which checks nothing.
func (d InsecureDevIdentity) Peek(r *http.Request, claimedUser string) (Principal, error) {
	return d.Identify(r, claimedUser)
}

// Identify implements Identity.
func (d InsecureDevIdentity) Identify(_ *http.Request, claimedUser string) (Principal, error) {
	if claimedUser == "" {
		return Principal{}, ErrNoUserID
	}
	return Principal{User: claimedUser, HomeRegion: d.Region}, nil
}
