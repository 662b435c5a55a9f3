package payment

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors callers branch on.
var (
	// ErrUnavailable: the breaker is open (or half-open and busy); the
	// provider was not called. Answer 503 with Retry-After.
	ErrUnavailable = errors.New("payment provider unavailable")
	// ErrInvalid: the request is malformed; retrying it will not help.
	ErrInvalid = errors.New("invalid payment request")
	// ErrConflict: the payment id was already used for a different request.
	ErrConflict = errors.New("payment id reused for a different request")
	// ErrProvider: the provider failed; nothing was charged, the same
	// payment id may be retried.
	ErrProvider = errors.New("payment provider error")
)

// PaymentRequest asks to charge Amount (minor units, e.g. cents) for one
// reservation. PaymentID is the idempotency key: the caller makes it once
// per reservation and reuses it on every retry.
type PaymentRequest struct {
	ReservationID string
	Sale          string
	User          string
	Amount        int64
	PaymentID     string
}

// Validate says what is wrong with r, wrapping ErrInvalid.
func (r PaymentRequest) Validate() error {
	switch {
	case r.PaymentID == "":
		return fmt.Errorf("%w: empty payment id", ErrInvalid)
	case r.ReservationID == "" || r.Sale == "" || r.User == "":
		return fmt.Errorf("%w: reservation %q, sale %q and user %q are required", ErrInvalid, r.ReservationID, r.Sale, r.User)
	case r.Amount <= 0:
		return fmt.Errorf("%w: amount %d must be positive", ErrInvalid, r.Amount)
	}
	return nil
}

// Status is the provider's business answer.
type Status string

// Payment statuses.
const (
	Paid     Status = "paid"
	Declined Status = "declined" // the provider works; the buyer's payment was refused
)

// PaymentResult is the provider's answer.
type PaymentResult struct {
	PaymentID string
	Status    Status
	// Replayed: this payment id was seen before; the first answer is
	// returned and nothing was charged again.
	Replayed bool
	At       time.Time
}

// Provider charges buyers. Pay must be idempotent by PaymentID.
type Provider interface {
	Pay(ctx context.Context, req PaymentRequest) (PaymentResult, error)
}

// Extension is the expiry a reservation gets when its payment could not be
// attempted (ErrUnavailable): long enough for the buyer to come back after
// retryAfter and pay (now + 2*retryAfter), but never past reservedAt +
// 2*ttl, so a long outage cannot hold stock forever. ok is false when the
// reservation cannot be extended further (it keeps expiresAt).
func Extension(reservedAt time.Time, ttl time.Duration, expiresAt, now time.Time, retryAfter time.Duration) (time.Time, bool) {
	limit := reservedAt.Add(2 * ttl)
	want := now.Add(2 * retryAfter)
	if want.After(limit) {
		want = limit
	}
	if !want.After(expiresAt) {
		return expiresAt, false
	}
	return want, true
}
