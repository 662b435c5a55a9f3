package regional

import (
	"context"
	"errors"
	"net/http"
	"time"

	"flashsale/quota"
	"flashsale/regional/redisstore"
)

// enterRedis is the admission step (issue 14): a slot of the sale's and
// the Redis limit (only Redis's for sale ""), waited for briefly in a
// bounded queue (admission.wait), or 503 overloaded, before any Redis
// work, with a retry hint that follows the load. ctx is the client's: one
// that went away is not waited for.
func (s *Server) enterRedis(ctx context.Context, sale string) (*slot, reply, bool) {
	sl, wait, ok := s.adm.wait(ctx, sale)
	if !ok {
		return nil, s.overloaded(wait), false
	}
	return sl, reply{}, true
}

// overloaded is the answer of a shed request: nothing was done.
func (s *Server) overloaded(wait time.Duration) reply {
	return fail(http.StatusServiceUnavailable, CodeOverloaded,
		"this region is at capacity: nothing was done; retry after retryAfterMs (the same requestId is safe)").after(wait)
}

// reserveFailed maps a failed reserve call to its answer. The buyer must
// never be told a failure that could hide a reservation: what was dropped
// unsent is "overloaded", what may have run is "outcome_unknown", and only
// an error proving the script did not run is "unavailable".
func (s *Server) reserveFailed(sale, user string, err error) reply {
	switch {
	case errors.Is(err, redisstore.ErrDropped):
		return fail(http.StatusServiceUnavailable, CodeOverloaded,
			"this region could not take the request in time: nothing was reserved; retry after retryAfterMs").after(s.adm.hint.shedNow(time.Now()))
	case errors.Is(err, redisstore.ErrOutcomeUnknown) || !redisstore.NotSent(err) && !errors.Is(err, redisstore.ErrBatcherClosed):
		s.m.storeErrors.WithLabelValues("reserve").Inc()
		s.warnThrottled("reserve outcome unknown", "sale", sale, "user", user, "err", err)
		return fail(http.StatusServiceUnavailable, CodeOutcomeUnknown,
			"the reservation may or may not have been made: retry with the same requestId (it never reserves twice) or GET /v1/flash-sale/requests/{requestId}?itemId=%s", sale).after(time.Second)
	}
	s.m.storeErrors.WithLabelValues("reserve").Inc()
	s.warnThrottled("reserve failed", "sale", sale, "user", user, "err", err)
	return fail(http.StatusServiceUnavailable, CodeUnavailable,
		"could not reach this region's stock: nothing was reserved; retry with the same requestId").after(time.Second)
}

// RequestJSON is the answer of GET /v1/flash-sale/requests/{requestId}:
// what a buy with that requestId did. Outcome "reserved" carries the
// reservation (whose state may since have moved on); "none" means no
// reservation was made for it so far (a buy still in flight may yet make
// one: retrying it with the same requestId is always safe).
type RequestJSON struct {
	RequestID   string           `json:"requestId"`
	ItemID      string           `json:"itemId"`
	Outcome     string           `json:"outcome"` // reserved or none
	Reservation *ReservationJSON `json:"reservation,omitempty"`
}

// requestOutcome answers what became of a buy: for the buyer who heard
// outcome_unknown. Only the requestId's own user is answered.
func (s *Server) requestOutcome(_ http.ResponseWriter, r *http.Request) reply {
	reqID := r.PathValue("requestId")
	if rep, ok := checkID("requestId", CodeBadRequestID, reqID, false); !ok {
		return rep
	}
	q := r.URL.Query()
	item, user := q.Get("itemId"), q.Get("userId")
	if rep, ok := checkID("itemId", CodeBadItemID, item, false); !ok {
		return rep
	}
	if rep, ok := checkID("userId", CodeBadUserID, user, true); !ok {
		return rep
	}
	p, rep, ok := s.identify(r, user, true)
	if !ok {
		return rep
	}
	if s.sales.Get(item) == nil {
		return fail(http.StatusNotFound, CodeUnknownSale, "no sale %s", item)
	}
	if rep, ok := s.admit(r, p.User, s.cfg.now()); !ok {
		return rep
	}
	slot, rep, ok := s.enterRedis(r.Context(), "")
	if !ok {
		return rep
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.RedisTimeout)
	defer cancel()
	resv, err := s.store.RequestReservation(ctx, item, reqID)
	slot.done(err != nil && !errors.Is(err, quota.ErrNoSuchResv), time.Now())
	switch {
	case errors.Is(err, quota.ErrNoSuchResv):
		return success(http.StatusOK, "none", RequestJSON{RequestID: reqID, ItemID: item, Outcome: "none"})
	case err != nil:
		s.m.storeErrors.WithLabelValues("request").Inc()
		s.warnThrottled("read request failed", "sale", item, "request", reqID, "err", err)
		return fail(http.StatusServiceUnavailable, CodeUnavailable, "could not read the request's outcome: retry").after(time.Second)
	}
	if resv.User != p.User {
		return fail(http.StatusForbidden, CodeNotYourRequest, "requestId %s belongs to another user", reqID)
	}
	rj := s.resvJSON(item, resv)
	return success(http.StatusOK, "reserved", RequestJSON{RequestID: reqID, ItemID: item, Outcome: "reserved", Reservation: &rj})
}
