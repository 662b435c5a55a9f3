// Package devtoken signs shopper identity tokens the way the regional seller
// verifies them (HS256, `sub` = user, `home_region` = the user's one home
// region). Used by `flashctl token`, the dev stack and the load generator;
// production tokens come from the real identity provider.
package devtoken

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sign returns an HS256 token for user with home region, valid for ttl from now.
func Sign(secret []byte, user, region string, now time.Time, ttl time.Duration) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("token: the signing secret is empty")
	case user == "":
		return "", errors.New("token: the user is empty")
	case region == "":
		return "", errors.New("token: the home region is empty")
	}
	claims := jwt.MapClaims{
		"sub":         user,
		"home_region": region,
		"iat":         now.Unix(),
		"exp":         now.Add(ttl).Unix(),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
