// Package payment takes the money for a reservation: a Provider interface,
// a dev provider that simulates latency and failures, and a circuit breaker
// wrapper that answers ErrUnavailable fast while the provider is down, so
// the confirm handler can answer 503 with Retry-After and extend the
// reservation (bounded, see Extension) rather than let it expire.
//
// It must never charge twice for one payment id: callers retry a confirm
// whose result they did not record with the same payment id, and providers
// answer such a retry with the first result.
//
// In the confirm handler:
//
//	res, err := breaker.Pay(ctx, payment.PaymentRequest{..., PaymentID: stableIDForThisReservation})
//	if errors.Is(err, payment.ErrUnavailable) {
//		until, ok := payment.Extension(reservedAt, ttl, expiresAt, now, breaker.RetryAfter())
//		// if ok: store.Extend(ctx, sale, id, until, reservedAt.Add(2*ttl))
//		// answer 503 with Retry-After: breaker.RetryAfter()
//	}
package payment
