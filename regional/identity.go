package regional

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
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
//
// The checks themselves are golang-jwt's: the signing method's Verify
// (constant-time) and its claims Validator. Identify only splits and
// decodes the token (with encoding/json/v2, through its mirror module),
// which jwt.Parser does with a generic JSON decoding of the header and of
// every registered claim: most of a check's cost (BenchmarkIdentify), on
// the request every buyer makes at the opening.
type JWTIdentity struct {
	method    jwt.SigningMethod // the only one accepted: no algorithm confusion
	key       any
	validator *jwt.Validator
}

// shopperClaims holds the claims the seller reads or the validator checks.
// Times are plain numbers (NumericDate, seconds, maybe fractional).
type shopperClaims struct {
	Subject    string           `json:"sub"`
	HomeRegion string           `json:"home_region"`
	Issuer     string           `json:"iss"`
	Audience   jwt.ClaimStrings `json:"aud"`
	Expires    claimTime        `json:"exp"`
	NotBefore  claimTime        `json:"nbf"`
	IssuedAt   claimTime        `json:"iat"`
}

// claimTime is a NumericDate claim: seconds, maybe fractional; null or
// absent is 0. Whole seconds, what issuers send, are parsed as an integer:
// strconv.ParseFloat's frame (its slow path keeps an 800-byte decimal on
// the stack) regrew the connection goroutine's stack on nearly every
// admitted buy at 8,000 connections, where the GC shrinks each idle
// connection's stack between two of its requests: 55% of the seller's
// stack growth in a profile of that point.
type claimTime float64

// UnmarshalJSON implements json.Unmarshaler.
func (t *claimTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*t = claimTime(n)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("want a number of seconds, got %.40s", b)
	}
	*t = claimTime(f)
	return nil
}

// numericDate is a decoded time claim as the library's type; 0 is absent.
func numericDate(sec claimTime) (*jwt.NumericDate, error) {
	if sec == 0 {
		return nil, nil
	}
	whole, frac := math.Modf(float64(sec))
	return jwt.NewNumericDate(time.Unix(int64(whole), int64(frac*1e9))), nil
}

func (c *shopperClaims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.Expires) }
func (c *shopperClaims) GetNotBefore() (*jwt.NumericDate, error)      { return numericDate(c.NotBefore) }
func (c *shopperClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return numericDate(c.IssuedAt) }
func (c *shopperClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *shopperClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *shopperClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

// NewJWTIdentity builds a verifier from one key: HS256 or Ed25519.
func NewJWTIdentity(cfg JWTConfig) (*JWTIdentity, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(cfg.Leeway)}
	var method jwt.SigningMethod
	var key any
	if len(cfg.HS256Secret) > 0 {
		method, key = jwt.SigningMethodHS256, append([]byte(nil), cfg.HS256Secret...)
	} else {
		method, key = jwt.SigningMethodEdDSA, ed25519.PublicKey(append([]byte(nil), cfg.Ed25519PublicKey...))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &JWTIdentity{method: method, key: key, validator: jwt.NewValidator(opts...)}, nil
}

// Mode implements Identity.
func (*JWTIdentity) Mode() string { return "jwt" }

// Identify implements Identity.
func (j *JWTIdentity) Identify(r *http.Request, claimedUser string) (Principal, error) {
	raw, err := bearerToken(r)
	if err != nil {
		return Principal{}, err
	}
	c, err := j.verify(raw)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	return principal(c.Subject, c.HomeRegion, claimedUser)
}

// verify checks raw (header.payload.signature): the header names this
// identity's algorithm, the signature verifies over header.payload, and
// the claims pass the validator (exp required, nbf, iss, aud, leeway).
func (j *JWTIdentity) verify(raw string) (shopperClaims, error) {
	var c shopperClaims
	head, payload, sig, err := splitToken(raw)
	if err != nil {
		return c, err
	}
	hb, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return c, fmt.Errorf("header: %w", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := jsonv2.Unmarshal(hb, &h); err != nil {
		return c, fmt.Errorf("header: %w", err)
	}
	if h.Alg != j.method.Alg() {
		return c, fmt.Errorf("signing method %q is not accepted (want %s)", h.Alg, j.method.Alg())
	}
	sb, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return c, fmt.Errorf("signature: %w", err)
	}
	if err := j.method.Verify(raw[:len(head)+1+len(payload)], sb, j.key); err != nil {
		return c, fmt.Errorf("signature: %w", err)
	}
	if c, err = decodeClaims(payload); err != nil {
		return c, err
	}
	if err := j.validator.Validate(&c); err != nil {
		return c, err
	}
	return c, nil
}

// splitToken cuts a compact JWT into its three base64url parts.
func splitToken(raw string) (head, payload, sig string, err error) {
	head, rest, ok1 := strings.Cut(raw, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return "", "", "", errors.New("token is not header.payload.signature")
	}
	return head, payload, sig, nil
}

// decodeClaims decodes a token's payload part. encoding/json/v2 refuses a
// claim named twice (which claim would a check have seen?) and invalid
// UTF-8; claims this seller does not read are ignored.
func decodeClaims(payload string) (shopperClaims, error) {
	var c shopperClaims
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return c, fmt.Errorf("payload: %w", err)
	}
	if err := jsonv2.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("payload: %w", err)
	}
	return c, nil
}

// Peek implements Identity: the token's payload, decoded but not verified.
func (*JWTIdentity) Peek(r *http.Request, claimedUser string) (Principal, error) {
	raw, err := bearerToken(r)
	if err != nil {
		return Principal{}, err
	}
	_, payload, _, err := splitToken(raw)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
	}
	c, err := decodeClaims(payload)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrBadToken, err)
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
