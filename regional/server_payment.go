package regional

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"flashsale/quota"
	"flashsale/regional/payment"
)

// Error codes of the payment step of confirm.
const (
	// CodePaymentUnavailable: the payment could not be attempted (breaker
	// open, provider failing or slow). The reservation was extended; retry
	// after Retry-After, you will not be charged twice.
	CodePaymentUnavailable = "payment_unavailable"
	// CodePaymentDeclined: the provider refused the buyer's payment. The
	// reservation stays active until it expires or is cancelled.
	CodePaymentDeclined = "payment_declined"
	// CodePaymentRejected: the provider refused the request itself (its
	// payment id was used for a different request, or it is malformed).
	CodePaymentRejected = "payment_rejected"
)

// retryAfterer is what the payment.Breaker offers besides Pay: how long
// until it lets a call through again.
type retryAfterer interface{ RetryAfter() time.Duration }

type payMetrics struct {
	extensions *prometheus.CounterVec // sale
	orphans    *prometheus.CounterVec // sale
}

func newPayMetrics(reg prometheus.Registerer, region string) (*payMetrics, error) {
	labels := prometheus.Labels{"region": region}
	m := &payMetrics{
		extensions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "reservation_extensions_total", ConstLabels: labels,
			Help: "Reservations whose expiry was moved later because payment was unavailable at confirm.",
		}, []string{"sale"}),
		orphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "flashsale", Subsystem: "seller", Name: "payment_orphans_total", ConstLabels: labels,
			Help: "Payments taken for a reservation that was no longer active when the confirm was recorded (refund by hand).",
		}, []string{"sale"}),
	}
	for _, c := range []prometheus.Collector{m.extensions, m.orphans} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register payment metrics for region %s: %w", region, err)
		}
	}
	return m, nil
}

// PaymentID is the idempotency key of a reservation's payment. It is
// derived, not stored, so a confirm retried after its Pay succeeded but its
// Confirm was not recorded asks the provider again with the same id and
// gets the first answer instead of a second charge. Reservation ids are
// ULIDs, unique across regions, but the region stays part of the key: ids
// made before were unique only per sale and region, and a new key format
// would charge a reservation confirmed across the upgrade twice.
func PaymentID(region, sale, resv string) string {
	return "fs-" + region + "-" + sale + "-" + resv
}

// takePayment charges the buyer of an active reservation. ok means paid;
// otherwise rep is the answer (for an unavailable provider, after the
// reservation was extended).
func (s *Server) takePayment(r *http.Request, sale string, ttl time.Duration, resv quota.Reservation, now time.Time) (rep reply, ok bool) {
	req := payment.PaymentRequest{
		ReservationID: resv.ID, Sale: sale, User: resv.User, Amount: s.cfg.PaymentAmount,
		PaymentID: PaymentID(s.cfg.Region, sale, resv.ID),
	}
	// The buyer going away must not abandon a charge half-made; the
	// timeout bounds it instead.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.PaymentTimeout)
	res, err := s.payment.Pay(ctx, req)
	cancel()
	switch {
	case err == nil && res.Status == payment.Paid:
		return reply{}, true
	case err == nil && res.Status == payment.Declined:
		return fail(http.StatusPaymentRequired, CodePaymentDeclined,
			"payment %s was declined: the reservation stays held until %s; cancel it to free the unit",
			req.PaymentID, time.UnixMilli(resv.ExpiresAt).UTC().Format(time.RFC3339)), false
	case errors.Is(err, payment.ErrConflict), errors.Is(err, payment.ErrInvalid):
		s.log.Error("payment provider rejected the request", "sale", sale, "reservation", resv.ID, "payment", req.PaymentID, "err", err)
		return fail(http.StatusConflict, CodePaymentRejected, "the payment provider rejected payment %s: %v", req.PaymentID, err), false
	case err == nil:
		err = fmt.Errorf("pay %s: unknown status %q", req.PaymentID, res.Status)
	}
	s.warnThrottled("payment unavailable", "sale", sale, "reservation", resv.ID, "payment", req.PaymentID, "err", err)
	return s.holdForPayment(sale, ttl, resv, now), false
}

// holdForPayment extends the reservation while payment is down (bounded
// by payment.Extension) and answers 503 with Retry-After: a buyer who got
// a reservation must not lose it to our outage.
func (s *Server) holdForPayment(sale string, ttl time.Duration, resv quota.Reservation, now time.Time) reply {
	retry := time.Second
	if ra, ok := s.payment.(retryAfterer); ok {
		retry = max(retry, ra.RetryAfter())
	}
	until := time.UnixMilli(resv.ExpiresAt)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	defer cancel()
	if ext, err := s.extend(ctx, sale, ttl, resv, now, retry); err != nil {
		s.m.storeErrors.WithLabelValues("extend").Inc()
		s.warnThrottled("extend reservation failed", "sale", sale, "reservation", resv.ID, "err", err)
	} else if ext.After(until) {
		s.pm.extensions.WithLabelValues(sale).Inc()
		until = ext
	}
	return fail(http.StatusServiceUnavailable, CodePaymentUnavailable,
		"payment is unavailable right now: reservation %s is held until %s; retry the confirm after the Retry-After (you will not be charged twice)",
		resv.ID, until.UTC().Format(time.RFC3339)).after(retry)
}

// extend moves the reservation's expiry as payment.Extension allows and
// returns the expiry in force.
func (s *Server) extend(ctx context.Context, sale string, ttl time.Duration, resv quota.Reservation, now time.Time, retry time.Duration) (time.Time, error) {
	expires := time.UnixMilli(resv.ExpiresAt)
	// reservedAt + 2 TTL, with reservedAt = expiresAt - TTL
	limit, err := s.store.ExtensionCap(ctx, sale, resv.ID, expires.Add(ttl))
	if err != nil {
		return expires, err
	}
	until, ok := payment.Extension(limit.Add(-2*ttl), ttl, expires, now, retry)
	if !ok {
		return expires, nil
	}
	return s.store.Extend(ctx, sale, resv.ID, until, limit)
}
