package regional

import (
	"context"
	"errors"
	"net/http"
	"time"

	"flashsale/quota"
	"flashsale/regional/redisstore"
)

type buyRequest struct {
	ItemID    string `json:"itemId"`
	UserID    string `json:"userId"`
	RequestID string `json:"requestId"`
}

type finishRequest struct {
	ItemID string `json:"itemId"`
	UserID string `json:"userId"`
}

// ReservationJSON is a reservation as shoppers see it.
type ReservationJSON struct {
	ReservationID string    `json:"reservationId"`
	ItemID        string    `json:"itemId"`
	UserID        string    `json:"userId"`
	RequestID     string    `json:"requestId"`
	State         string    `json:"state"`
	ExpiresAt     time.Time `json:"expiresAt"`
	Region        string    `json:"region"`
}

// StatusJSON is the answer of GET /v1/flash-sale/status.
type StatusJSON struct {
	ItemID string `json:"itemId"`
	Region string `json:"region"`
	State  string `json:"state"`
	// Remaining is the whole sale's units neither sold nor reserved, in
	// every region and the pool, at most about a second old; -1 when
	// unknown. 0 with state sold_out: over for good.
	Remaining int64 `json:"remaining"`
	// RegionRemaining is what this region can still reserve; -1 until
	// its counters were read.
	RegionRemaining int64     `json:"regionRemaining"`
	Total           int64     `json:"total"`
	PerUserLimit    int64     `json:"perUserLimit"`
	StartsAt        time.Time `json:"startsAt"`
	EndsAt          time.Time `json:"endsAt,omitzero"`
	ServerTime      time.Time `json:"serverTime"`
	Identity        string    `json:"identity"`
	Warning         string    `json:"warning,omitempty"`
	// Sellers is the number of live sellers of this region (gossip
	// membership; 1 for a seller running alone).
	Sellers int `json:"sellers"`
}

const insecureWarning = "INSECURE DEV IDENTITY: this server believes any userId it is sent; never use it for a real sale"

func stateName(st quota.ResvState) string {
	switch st {
	case quota.Active:
		return "active"
	case quota.Confirmed:
		return "confirmed"
	case quota.Cancelled:
		return "cancelled"
	case quota.Expired:
		return "expired"
	}
	return "unknown"
}

func (s *Server) resvJSON(sale string, r quota.Reservation) ReservationJSON {
	return ReservationJSON{
		ReservationID: r.ID, ItemID: sale, UserID: r.User, RequestID: r.RequestID,
		State: stateName(r.State), ExpiresAt: time.UnixMilli(r.ExpiresAt).UTC(), Region: s.cfg.Region,
	}
}

// buy is the funnel of DESIGN §5, cheapest checks first: parse, identity,
// sale state from memory, rate limits, and only then one Redis script.
func (s *Server) buy(w http.ResponseWriter, r *http.Request) reply {
	var in buyRequest
	if rep, ok := decodeBody(w, r, s.cfg.MaxBodyBytes, &in, false); !ok {
		return rep
	}
	if rep, ok := checkID("itemId", CodeBadItemID, in.ItemID, false); !ok {
		return rep
	}
	if rep, ok := checkID("userId", CodeBadUserID, in.UserID, true); !ok {
		return rep
	}
	if rep, ok := checkID("requestId", CodeBadRequestID, in.RequestID, false); !ok {
		return rep
	}
	now := s.cfg.now()
	sale := s.sales.Get(in.ItemID)
	phase := PhaseEnded
	if sale != nil {
		phase = sale.Phase(now)
	}
	if (phase == PhaseOpen || phase == PhaseQuotaPending) && s.adm.saturated() {
		// Shed before the token is verified: with every Redis slot taken
		// and the queue full this buy could only be shed after that work,
		// which under a surge is much of the seller's CPU spent on answers
		// that change nothing. It is still demand. A buyer of another
		// region is shed here like the others (its retry is sent home),
		// and a bad token hears overloaded before it hears 401: nothing
		// was done either way.
		s.demand.Count(in.ItemID)
		return s.overloaded(s.adm.hint.shedNow(time.Now()))
	}
	// Only an open sale goes on to Redis: any other answer comes from
	// memory, is public and changes nothing, so the token is only peeked
	// at (for the home region: other regions' buyers are still sent home)
	// and its signature, the costliest check in the funnel, is skipped.
	p, rep, ok := s.identify(r, in.UserID, phase == PhaseOpen)
	if !ok {
		return rep
	}
	if sale == nil {
		return fail(http.StatusNotFound, CodeUnknownSale, "no sale %s", in.ItemID)
	}
	spec := sale.Spec()
	switch phase {
	case PhaseOpen, PhaseUpcoming, PhaseQuotaPending, PhaseAllReserved:
		// Buyers hammering before the opening are the opening's demand,
		// and buyers told to wait for quota are where quota must go.
		s.demand.Count(in.ItemID)
	}
	// Admission comes before the hold for quota: a held buy counts as
	// work in flight (issue 14), so a burst on a dry region is bounded by
	// the limit, not by the number of connections, and the buys released
	// together when quota arrives are the ones the limit can serve.
	var slot *slot
	if phase == PhaseOpen || phase == PhaseQuotaPending {
		if slot, rep, ok = s.enterRedis(r.Context(), in.ItemID); !ok {
			return rep
		}
		defer slot.cancel() // every answer below that did no script call
	}
	held := false
	if phase == PhaseQuotaPending {
		held = true
		if s.holdForQuota(r.Context(), sale) {
			now = s.cfg.now()
			if phase = sale.Phase(now); phase == PhaseOpen {
				// On to Redis now: the token was only peeked at so far.
				if p, rep, ok = s.identify(r, in.UserID, true); !ok {
					return rep
				}
			}
		}
		// The limiter learns from the script call alone, not from the
		// hold (a held request is slow on purpose, not because Redis is).
		slot.restart(time.Now())
	}
	if rep, ok := phaseReply(in.ItemID, phase, spec.StartsAt, now); !ok {
		return rep
	}
	if rep, ok := s.admit(r, p.User, now); !ok {
		return rep
	}

	// The request's deadline travels into the Batcher: a request still
	// queued when it passes, or whose client went away, is dropped
	// unsent, so no unit is held behind a failure answer. A script call
	// already sent is never cut short (the Batcher runs it on its own
	// context); its caller then hears outcome_unknown.
	ctx, cancel := context.WithDeadline(r.Context(), slot.start.Add(s.cfg.RedisTimeout))
	defer cancel()
	req := redisstore.ReserveRequest{User: p.User, RequestID: in.RequestID, Now: now, TTL: spec.ReservationTTL, PerUserLimit: spec.PerUserLimit}
	res, err := s.reserveIn(ctx, sale, in.ItemID, req)
	if err == nil && res.Outcome == quota.SoldOut && !held && sale.DryPhase() == PhaseQuotaPending {
		// Held once more, in its slot, now that this region turned out
		// dry; then one more try if quota arrived: the script's answer,
		// not memory, decides whether it did. The first call's sample is
		// not taken (the slot is still held); the second's is.
		if !s.holdForQuota(r.Context(), sale) {
			return dryReply(in.ItemID, sale.DryPhase())
		}
		cancel()
		slot.restart(time.Now())
		ctx, cancel = context.WithDeadline(r.Context(), slot.start.Add(s.cfg.RedisTimeout))
		defer cancel()
		req.Now = s.cfg.now()
		res, err = s.reserveIn(ctx, sale, in.ItemID, req)
	}
	slot.done(err != nil, time.Now())
	if err != nil {
		return s.reserveFailed(in.ItemID, p.User, err)
	}
	switch res.Outcome {
	case quota.Reserved:
		return success(http.StatusCreated, "reserved", s.resvJSON(in.ItemID, res.Reservation))
	case quota.Duplicate:
		if res.Reservation.User != p.User {
			return fail(http.StatusConflict, CodeRequestIDConflict, "requestId %s was already used by another user: pick a fresh one", in.RequestID)
		}
		return success(http.StatusOK, "duplicate", s.resvJSON(in.ItemID, res.Reservation))
	case quota.UserLimit:
		return fail(http.StatusConflict, CodeAlreadyBought, "user %s already holds the limit of %d for sale %s", p.User, spec.PerUserLimit, in.ItemID)
	case quota.SoldOut:
		// The script speaks for this region only; the view says whether
		// the sale is sold out, all reserved, or this region is waiting.
		return dryReply(in.ItemID, sale.DryPhase())
	case quota.Halted:
		return sale.refusedHalted()
	case quota.StaleEpoch:
		// The agent reconciled and moved the seller epoch (DESIGN §4.5):
		// re-read the counters, which carry the new one, and let the buyer retry.
		s.kickRefresh()
		return fail(http.StatusServiceUnavailable, CodeHalted, "sale %s changed its seller epoch in this region: retry", in.ItemID).after(250 * time.Millisecond)
	}
	return fail(http.StatusInternalServerError, CodeUnavailable, "unexpected outcome %v", res.Outcome)
}

// reserveIn runs the reserve script. Its sold_out speaks for this region
// only: the sale is marked dry (DryPhase then says why) and the counters
// are read again at once.
func (s *Server) reserveIn(ctx context.Context, sale *Sale, item string, req redisstore.ReserveRequest) (redisstore.ReserveResult, error) {
	req.Epoch = sale.Epoch()
	res, err := s.reserve.Reserve(ctx, item, req)
	if err == nil && res.Outcome == quota.SoldOut {
		sale.MarkDry()
		s.kickRefresh()
	}
	return res, err
}

// holdForQuota holds a request to a dry region for up to QuotaWait, in the
// hope that quota arrives (a grant published by apply_grant.lua kicks the
// counter refresh, which wakes the sale's holders), and reports whether the
// region stopped being dry. A held request costs a goroutine and no Redis
// I/O; the wait stays well inside the 200 ms answer budget. ctx is the
// client's: one that went away is not held further.
func (s *Server) holdForQuota(ctx context.Context, sale *Sale) bool {
	if s.cfg.QuotaWait <= 0 {
		return false
	}
	wake := sale.woken() // before the flag: see Sale.setAvailable
	if !sale.dry.Load() {
		return true
	}
	t := time.NewTimer(s.cfg.QuotaWait)
	defer t.Stop()
	select {
	case <-wake:
		s.m.holds.WithLabelValues("quota").Inc()
		return true
	case <-t.C:
		s.m.holds.WithLabelValues("timeout").Inc()
	case <-ctx.Done():
		s.m.holds.WithLabelValues("gone").Inc()
	}
	return false
}

// identify runs the identity step: who is calling, and is this their
// region (DESIGN I3)? Another home region gets a 307 to its endpoint, which
// keeps the method and body. Without verify, the token is only peeked at
// (Identity.Peek): for answers that change nothing.
func (s *Server) identify(r *http.Request, claimed string, verify bool) (Principal, reply, bool) {
	check := s.ident.Peek
	if verify {
		check = s.ident.Identify
	}
	p, err := check(r, claimed)
	switch {
	case errors.Is(err, ErrNoToken):
		return p, fail(http.StatusUnauthorized, CodeUnauthenticated, "send Authorization: Bearer <token>"), false
	case errors.Is(err, ErrBadToken):
		return p, fail(http.StatusUnauthorized, CodeInvalidToken, "token rejected: %v", err), false
	case errors.Is(err, ErrUserMismatch):
		return p, fail(http.StatusForbidden, CodeUserMismatch, "userId does not match the token's subject: omit userId or send your own"), false
	case errors.Is(err, ErrNoUserID):
		return p, fail(http.StatusBadRequest, CodeBadUserID, "userId is required (insecure dev identity)"), false
	case err != nil:
		return p, fail(http.StatusUnauthorized, CodeInvalidToken, "identity: %v", err), false
	}
	if p.HomeRegion == s.cfg.Region {
		return p, reply{}, true
	}
	endpoint, known := s.cfg.Regions[p.HomeRegion]
	if !known {
		return p, fail(http.StatusForbidden, CodeUnknownHomeRegion, "home region %s is not served from here", p.HomeRegion), false
	}
	rep := fail(http.StatusTemporaryRedirect, CodeWrongRegion, "user's home region is %s: retry at the Location", p.HomeRegion)
	rep.location = endpoint + r.URL.RequestURI()
	return p, rep, false
}

// admit checks readiness and the token buckets: in-memory, after the sale
// checks, before Redis.
func (s *Server) admit(r *http.Request, user string, now time.Time) (reply, bool) {
	if !s.ready.Load() {
		return fail(http.StatusServiceUnavailable, CodeNotReady, "this seller is not ready (Redis, scripts or durability): see /readyz").after(time.Second), false
	}
	if ok, wait := s.ipLim.allow(clientIP(r, s.cfg.TrustForwardedFor), now); !ok {
		return fail(http.StatusTooManyRequests, CodeRateLimited, "too many requests from this client").after(wait), false
	}
	if ok, wait := s.userLim.allow(user, now); !ok {
		return fail(http.StatusTooManyRequests, CodeRateLimited, "too many requests for user %s", user).after(wait), false
	}
	return reply{}, true
}

func (s *Server) status(_ http.ResponseWriter, r *http.Request) reply {
	id := r.URL.Query().Get("itemId")
	if rep, ok := checkID("itemId", CodeBadItemID, id, false); !ok {
		return rep
	}
	sale := s.sales.Get(id)
	if sale == nil {
		return fail(http.StatusNotFound, CodeUnknownSale, "no sale %s", id)
	}
	now := s.cfg.now()
	spec := sale.Spec()
	st := StatusJSON{
		ItemID: id, Region: s.cfg.Region, State: sale.Phase(now).String(),
		Remaining: sale.SaleRemaining(), RegionRemaining: sale.Remaining(),
		Total: spec.Total, PerUserLimit: spec.PerUserLimit, StartsAt: spec.StartsAt.UTC(), EndsAt: spec.EndsAt.UTC(),
		ServerTime: now.UTC(), Identity: s.ident.Mode(), Sellers: s.liveSellers(),
	}
	if st.Identity == (InsecureDevIdentity{}).Mode() {
		st.Warning = insecureWarning
	}
	return success(http.StatusOK, "ok", st)
}

// finishing is a confirm or cancel under way: the caller's own
// reservation, read from Redis inside an admission slot.
type finishing struct {
	item, id string
	sale     *Sale
	resv     quota.Reservation
	now      time.Time
	slot     *slot
	ctx      context.Context
	cancel   context.CancelFunc
}

// close releases the slot (the latest one, if the confirm took another
// after its payment) and the Redis deadline.
func (f *finishing) close() {
	f.slot.done(false, time.Now())
	f.cancel()
}

// ownReservation runs what confirm and cancel share: the request's
// checks, identity (only the reservation's user may finish it; ended sales
// still accept both, since it was made while open), the rate limits, an
// admission slot, and the reservation read from Redis (missing: see
// missingResv). The caller closes the returned finishing.
func (s *Server) ownReservation(w http.ResponseWriter, r *http.Request) (*finishing, reply, bool) {
	var in finishRequest
	if rep, ok := decodeBody(w, r, s.cfg.MaxBodyBytes, &in, true); !ok {
		return nil, rep, false
	}
	q := r.URL.Query()
	item, rep, ok := oneOf("itemId", CodeBadItemID, in.ItemID, q.Get("itemId"))
	if !ok {
		return nil, rep, false
	}
	user, rep, ok := oneOf("userId", CodeBadUserID, in.UserID, q.Get("userId"))
	if !ok {
		return nil, rep, false
	}
	id := r.PathValue("id")
	if rep, ok := checkID("reservation id", CodeBadReservationID, id, false); !ok {
		return nil, rep, false
	}
	if rep, ok := checkID("itemId", CodeBadItemID, item, false); !ok {
		return nil, rep, false
	}
	if rep, ok := checkID("userId", CodeBadUserID, user, true); !ok {
		return nil, rep, false
	}
	p, rep, ok := s.identify(r, user, true)
	if !ok {
		return nil, rep, false
	}
	sale := s.sales.Get(item)
	if sale == nil {
		return nil, fail(http.StatusNotFound, CodeUnknownSale, "no sale %s", item), false
	}
	if sale.RolledBack() {
		// The scripts cannot see it (the epoch went with the lost
		// writes): see Sale.maxEpoch.
		return nil, sale.refusedHalted(), false
	}
	now := s.cfg.now()
	if rep, ok := s.admit(r, p.User, now); !ok {
		return nil, rep, false
	}
	sl, rep, ok := s.enterRedis(r.Context(), "")
	if !ok {
		return nil, rep, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.RedisTimeout)
	f := &finishing{item: item, id: id, sale: sale, now: now, slot: sl, ctx: ctx, cancel: cancel}
	resv, err := s.store.Reservation(ctx, item, id)
	switch {
	case errors.Is(err, quota.ErrNoSuchResv):
		rep := s.missingResv(f)
		f.close()
		return nil, rep, false
	case err != nil:
		f.close()
		return nil, s.readFailed(f, "reservation", err), false
	case resv.User != p.User:
		f.close()
		return nil, fail(http.StatusForbidden, CodeNotYours, "reservation %s belongs to another user", id), false
	}
	f.resv = resv
	return f, reply{}, true
}

// missingResv answers a confirm or cancel of a reservation Redis does not
// hold. While the region is stopped (halted, or a primary its agent has not
// reconciled: redisstore.Counters.Stopped) that may be a write the failover
// lost, which the agent's restore brings back: the answer is the scripts'
// (503 halted, retryable), not a final 404 the buyer would believe
// (DESIGN §4.5). The reservation read cannot tell, hence this second read,
// made only when one is missing.
func (s *Server) missingResv(f *finishing) reply {
	c, err := s.store.Counters(f.ctx, f.item)
	switch {
	case err != nil:
		return s.readFailed(f, "counters", err)
	case c.Stopped() || f.sale.rolledBack(c):
		return f.sale.refusedHalted()
	}
	return unknownResv(f)
}

// readFailed answers a failed Redis read of a confirm or cancel: nothing
// was changed, so it is retryable as it is.
func (s *Server) readFailed(f *finishing, what string, err error) reply {
	f.slot.done(true, time.Now())
	s.m.storeErrors.WithLabelValues(what).Inc()
	s.warnThrottled("read "+what+" failed", "sale", f.item, "reservation", f.id, "err", err)
	return fail(http.StatusServiceUnavailable, CodeUnavailable, "could not read the reservation: retry").after(time.Second)
}

func unknownResv(f *finishing) reply {
	return fail(http.StatusNotFound, CodeUnknownResv, "no reservation %s in sale %s in this region", f.id, f.item)
}

// finishFailed answers a confirm or cancel script that refused or failed.
func (s *Server) finishFailed(f *finishing, op string, err error) reply {
	switch {
	case errors.Is(err, quota.ErrNotActive):
		return fail(http.StatusConflict, CodeNotActive, "reservation %s is %s", f.id, stateName(f.resv.State))
	case errors.Is(err, quota.ErrNoSuchResv):
		return unknownResv(f)
	case errors.Is(err, quota.ErrHalted):
		// The region stopped since the reservation was read (or it was
		// read on a stopped region): nothing was done, retry.
		return f.sale.refusedHalted()
	}
	f.slot.done(true, time.Now())
	s.m.storeErrors.WithLabelValues(op).Inc()
	s.warnThrottled(op+" failed", "sale", f.item, "reservation", f.id, "err", err)
	return fail(http.StatusServiceUnavailable, CodeUnavailable, "could not reach this region's stock: retry (it is idempotent)").after(time.Second)
}

// cancelResv cancels the caller's reservation; its unit goes back to stock.
func (s *Server) cancelResv(w http.ResponseWriter, r *http.Request) reply {
	f, rep, ok := s.ownReservation(w, r)
	if !ok {
		return rep
	}
	defer f.close()
	if err := s.store.Cancel(f.ctx, f.item, f.id, f.now); err != nil {
		return s.finishFailed(f, "cancel", err)
	}
	f.sale.MaybeAvailable()
	f.resv.State = quota.Cancelled
	return success(http.StatusOK, "cancelled", s.resvJSON(f.item, f.resv))
}

// confirm pays for the caller's reservation (when a payment provider is
// set) and records it as sold.
func (s *Server) confirm(w http.ResponseWriter, r *http.Request) reply {
	f, rep, ok := s.ownReservation(w, r)
	if !ok {
		return rep
	}
	defer f.close()
	item, id, resv := f.item, f.id, f.resv
	// The sweeper may lag behind the clock: a reservation past its time is
	// over even if its unit has not been returned yet.
	if resv.State == quota.Active && resv.ExpiresAt <= f.now.UnixMilli() {
		return fail(http.StatusConflict, CodeNotActive, "reservation %s expired at %s", id, time.UnixMilli(resv.ExpiresAt).UTC().Format(time.RFC3339Nano))
	}
	// Pay first, then record: a confirm whose Pay went through but whose
	// Confirm was not recorded is retried with the same payment id, which
	// the provider answers without charging again. A confirmed reservation
	// was paid already; a cancelled or expired one is refused below.
	if s.payment == nil || resv.State != quota.Active {
		if err := s.store.Confirm(f.ctx, item, id, f.now); err != nil {
			return s.finishFailed(f, "confirm", err)
		}
		return s.confirmed(f)
	}
	// A region known to be stopped would refuse the confirm: the buyer is
	// not charged for it now. Memory is only a hint; one refused halted
	// after its charge is answered as any failure after Pay: retried with
	// the same payment id, which the provider does not charge again.
	if f.sale.halted.Load() {
		return haltedReply(item)
	}
	// The payment is not Redis work: its slot is given back while it runs,
	// and a forced one taken after it (the money is taken: the confirm is
	// not shed).
	f.slot.done(false, time.Now())
	rep, ok = s.takePayment(r, item, f.sale.Spec().ReservationTTL, resv, f.now)
	f.slot = s.adm.force()
	if !ok {
		return rep
	}
	// The payment may have used up the Redis deadline.
	f.cancel()
	f.ctx, f.cancel = context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.RedisTimeout)
	paymentID := PaymentID(s.cfg.Region, item, resv.ID)
	err := s.store.ConfirmPaid(f.ctx, item, id, f.now, paymentID)
	if errors.Is(err, quota.ErrNotActive) {
		// Expired or cancelled while the payment ran: the money is taken
		// for nothing. Rare (the reservation was active and unexpired just
		// before), and it needs a person.
		s.pm.orphans.WithLabelValues(item).Inc()
		s.log.Error("payment taken but the reservation is no longer active: refund it", "sale", item,
			"reservation", id, "payment", paymentID)
		return fail(http.StatusConflict, CodeNotActive, "reservation %s ended while it was being paid: payment %s will be refunded", id, paymentID)
	}
	if err != nil {
		return s.finishFailed(f, "confirm", err)
	}
	return s.confirmed(f)
}

// confirmed answers a recorded confirm. In a dry region, confirms turn
// "all reserved" into "sold out": the counters are read now rather than at
// the next tick, so buyers are told the sale is over as soon as it is.
func (s *Server) confirmed(f *finishing) reply {
	if f.sale.dry.Load() {
		s.kickRefresh()
	}
	f.resv.State = quota.Confirmed
	return success(http.StatusOK, "confirmed", s.resvJSON(f.item, f.resv))
}

// oneOf picks a field given in the body or the query; both must agree.
func oneOf(field, code, body, query string) (string, reply, bool) {
	if body != "" && query != "" && body != query {
		return "", fail(http.StatusBadRequest, code, "%s differs between body and query", field), false
	}
	if body != "" {
		return body, reply{}, true
	}
	return query, reply{}, true
}
