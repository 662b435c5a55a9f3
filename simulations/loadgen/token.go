package loadgen

import (
	"fmt"
	"time"

	"flashsale/internal/devtoken"
)

// Signer makes the shopper tokens the seller verifies (regional.JWTIdentity):
// HS256 with the user in sub and the home region in home_region.
type Signer struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewSigner checks the secret (at least 32 bytes, as the seller demands).
func NewSigner(secret []byte, ttl time.Duration) (*Signer, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("token secret is %d bytes: want at least 32", len(secret))
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	return &Signer{secret: append([]byte(nil), secret...), ttl: ttl, now: time.Now}, nil
}

// Token signs a token for u.
func (s *Signer) Token(u User) (string, error) {
	tok, err := devtoken.Sign(s.secret, u.ID, u.Region, s.now(), s.ttl)
	if err != nil {
		return "", fmt.Errorf("sign token for %s: %w", u.ID, err)
	}
	return tok, nil
}
