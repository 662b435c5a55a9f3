package regional

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// Error codes: part of the API (openapi.yaml); never rename one.
const (
	CodeBadJSON           = "bad_json"
	CodeBodyTooLarge      = "body_too_large"
	CodeUnsupportedMedia  = "unsupported_media_type"
	CodeBadItemID         = "bad_item_id"
	CodeBadUserID         = "bad_user_id"
	CodeBadRequestID      = "bad_request_id"
	CodeBadReservationID  = "bad_reservation_id"
	CodeUnauthenticated   = "unauthenticated"
	CodeInvalidToken      = "invalid_token"
	CodeUserMismatch      = "user_mismatch"
	CodeNotYours          = "not_your_reservation"
	CodeUnknownHomeRegion = "unknown_home_region"
	CodeWrongRegion       = "wrong_region"
	CodeUnknownSale       = "unknown_sale"
	CodeUnknownResv       = "unknown_reservation"
	CodeAlreadyBought     = "already_bought"
	CodeRequestIDConflict = "request_id_conflict"
	CodeNotActive         = "not_active"
	CodeSaleEnded         = "sale_ended"
	CodeSoldOut           = "sold_out"
	CodeNotStarted        = "not_started"
	CodeRateLimited       = "rate_limited"
	CodeNotReady          = "not_ready"
	CodeHalted            = "halted"
	CodePaused            = "sale_paused"
	CodeUnavailable       = "unavailable"
	CodeQuotaPending      = "quota_pending"
	CodeAllReserved       = "all_reserved"
	// CodeOverloaded: shed by admission control before any Redis work, or
	// dropped unsent at its deadline; nothing was done. Retry later.
	CodeOverloaded = "overloaded"
	// CodeOutcomeUnknown: the reservation script may have run but its
	// answer did not come in time. Retry with the same requestId (it never
	// reserves twice), or ask GET /v1/flash-sale/requests/{requestId}.
	CodeOutcomeUnknown = "outcome_unknown"
	CodeNotYourRequest = "not_your_request"
)

// Retry hints of the two "not now" answers of a dry region. Quota usually
// reaches a dry region within a few hundred milliseconds of its agent
// signalling need, so quota_pending asks for a quick retry; a unit held
// by a reservation comes back only when it expires or is cancelled
// (minutes), so all_reserved asks for a slow one that still notices.
const (
	quotaPendingRetry = 250 * time.Millisecond
	allReservedRetry  = 10 * time.Second
)

// reply is what a handler answers: a success body or a JSON error. outcome
// labels the request in metrics (an error code or a success word), so it
// comes from a fixed set.
type reply struct {
	status     int
	outcome    string
	body       any
	retryAfter time.Duration // > 0: a Retry-After header
	location   string        // redirects
}

// errorBody is every error's JSON. A retryable refusal (one with a
// Retry-After header) also carries RetryAfterMs: a finer, jittered hint,
// so that clients refused together do not all come back together.
type errorBody struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs int64  `json:"retryAfterMs,omitempty"`
}

func fail(status int, code, format string, args ...any) reply {
	return reply{status: status, outcome: code, body: errorBody{Code: code, Message: fmt.Sprintf(format, args...)}}
}

func success(status int, outcome string, body any) reply {
	return reply{status: status, outcome: outcome, body: body}
}

// after marks r retryable after about d: Retry-After in whole seconds (as
// HTTP defines it, rounded up) and, in an error body, retryAfterMs drawn
// uniformly from [d/2, 3d/2), at least 1 ms.
func (r reply) after(d time.Duration) reply {
	r.retryAfter = d
	if eb, ok := r.body.(errorBody); ok && d > 0 {
		eb.RetryAfterMs = jitterMs(d)
		r.body = eb
	}
	return r
}

func jitterMs(d time.Duration) int64 {
	ms := d.Milliseconds()
	return max(1, ms/2+rand.Int64N(max(1, ms)))
}

func (r reply) failed() bool { return r.status >= 300 }

// writeReply writes r as JSON.
func writeReply(w http.ResponseWriter, r reply) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if r.retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(r.retryAfter), 10))
	}
	if r.location != "" {
		h.Set("Location", r.location)
	}
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(r.body)
}

// retrySeconds rounds up, so a client that obeys never comes back early.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(1, s)
}

// decodeBody reads a small JSON object into v: size cap, content type,
// unknown fields and trailing data are all refused with a 4xx. allowEmpty
// accepts a request with no body at all (v stays zero).
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, allowEmpty bool) (reply, bool) {
	if allowEmpty && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0) {
		return reply{}, true
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return fail(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "Content-Type %q: send application/json", ct), false
		}
	}
	if r.ContentLength > limit {
		return fail(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body of %d bytes: the limit is %d", r.ContentLength, limit), false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body over the limit of %d bytes", limit), false
		}
		return fail(http.StatusBadRequest, CodeBadJSON, "reading the body: %v", err), false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return reply{}, true
		}
		return fail(http.StatusBadRequest, CodeBadJSON, "empty body: send a JSON object"), false
	}
	// encoding/json/v2 semantics: exact member names, no duplicates, valid
	// UTF-8, one value only ("{}{}" or "{} x" is malformed, not two
	// requests), and here no unknown members.
	if err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return fail(http.StatusBadRequest, CodeBadJSON, "body is not the expected JSON object: %s", jsonErrMessage(err)), false
	}
	return reply{}, true
}

// jsonErrMessage says what is wrong with a body, without Go type names.
func jsonErrMessage(err error) string {
	var sem *jsonv2.SemanticError
	if errors.As(err, &sem) {
		field := strings.TrimPrefix(string(sem.JSONPointer), "/")
		switch {
		case sem.Err != nil && field != "":
			return fmt.Sprintf("field %q: %v", field, sem.Err)
		case field != "":
			return fmt.Sprintf("field %q has the wrong type", field)
		default:
			return "want a JSON object"
		}
	}
	return strings.TrimPrefix(err.Error(), "jsontext: ")
}

// maxIDLen bounds every id (sale, user, request, reservation): ids are
// Redis key parts and metric-free log fields, so they stay short and plain.
const maxIDLen = 64

// validID reports whether s is 1-64 characters of [A-Za-z0-9_.:-].
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == ':' || b == '-') {
			return false
		}
	}
	return true
}

// checkID answers 400 with code when id is not a valid id. optional ids
// may be empty.
func checkID(field, code, id string, optional bool) (reply, bool) {
	if id == "" && optional {
		return reply{}, true
	}
	if id == "" {
		return fail(http.StatusBadRequest, code, "%s is required", field), false
	}
	if !validID(id) {
		return fail(http.StatusBadRequest, code, "%s: want 1-%d characters of [A-Za-z0-9_.:-]", field, maxIDLen), false
	}
	return reply{}, true
}

// phaseReply answers a sale that is not open, from memory.
func phaseReply(sale string, p Phase, startsAt, now time.Time) (reply, bool) {
	switch p {
	case PhaseOpen:
		return reply{}, true
	case PhaseUpcoming:
		return fail(http.StatusTooEarly, CodeNotStarted, "sale %s starts at %s", sale, startsAt.UTC().Format(time.RFC3339)).after(startsAt.Sub(now)), false
	case PhaseEnded:
		return fail(http.StatusGone, CodeSaleEnded, "sale %s has ended", sale), false
	case PhasePaused:
		return fail(http.StatusServiceUnavailable, CodePaused, "sale %s is paused", sale).after(time.Second), false
	case PhaseSoldOut, PhaseQuotaPending, PhaseAllReserved:
		return dryReply(sale, p), false
	case PhaseHalted:
		return haltedReply(sale), false
	}
	return fail(http.StatusInternalServerError, CodeUnavailable, "sale %s in an unknown phase %v", sale, p), false
}

// haltedReply answers a request the region cannot serve while it is
// stopped (halted by its agent to reconcile, or a primary the agent has not
// reconciled yet): a buy, a confirm or a cancel. Retryable: the agent
// resumes the region within seconds.
func haltedReply(sale string) reply {
	return fail(http.StatusServiceUnavailable, CodeHalted, "sale %s is halted in this region while it reconciles", sale).after(time.Second)
}

// dryReply answers a buyer this region cannot serve now. Only a sale sold
// out everywhere is final (410); the other two are retryable 503s, since a
// buyer told "sold out" goes away while stock is left (DESIGN L1).
func dryReply(sale string, p Phase) reply {
	switch p {
	case PhaseSoldOut:
		return fail(http.StatusGone, CodeSoldOut, "sale %s is sold out", sale)
	case PhaseAllReserved:
		return fail(http.StatusServiceUnavailable, CodeAllReserved,
			"every unit of sale %s is held by a reservation; units come back if reservations expire or are cancelled: retry later with the same requestId", sale).after(allReservedRetry)
	}
	return fail(http.StatusServiceUnavailable, CodeQuotaPending,
		"sale %s has stock left but this region is waiting for its share: retry with the same requestId (it will not reserve twice)", sale).after(quotaPendingRetry)
}

// clientIP is the peer address, or the last X-Forwarded-For hop when our own
// proxy is trusted to have appended it.
func clientIP(r *http.Request, trustForwarded bool) string {
	if trustForwarded {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := strings.TrimSpace(last); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
