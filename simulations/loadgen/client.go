package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The shopper API paths (regional/openapi.yaml).
const (
	BuyPath      = "/v1/flash-sale/buy"
	resvPathBase = "/v1/flash-sale/reservations/"
)

// HTTPConfig says how the generator talks to the regional sellers.
type HTTPConfig struct {
	// Endpoints maps each region to its seller's base URL
	// (http://127.0.0.1:port). Every home region of the population needs
	// one; only loopback hosts are accepted.
	Endpoints map[string]string
	// Sale is the itemId bought.
	Sale string
	// Signer signs the identity tokens; nil sends none (a seller in
	// insecure dev mode, or a baseline that does not check).
	Signer *Signer
	// Timeout bounds one try; Retries is how many more tries a timed-out
	// or refused attempt gets, with the same requestId.
	Timeout time.Duration
	Retries int
	// MisrouteFrac of attempts go to a region other than the user's home,
	// which must answer 307 to the home region (followed, up to 3 hops).
	MisrouteFrac float64
	// ConfirmFrac of the reservations are confirmed and CancelFrac
	// cancelled; the rest are left to expire.
	ConfirmFrac, CancelFrac float64
	// MaxConns caps connections per seller (0: no cap).
	MaxConns int
}

// HTTPOp buys through the shopper HTTP API: it is the Op the generator
// drives against real sellers and HTTP baselines alike.
type HTTPOp struct {
	cfg     HTTPConfig
	regions []string
	client  *http.Client
}

// NewHTTPOp checks cfg and builds the client.
func NewHTTPOp(cfg HTTPConfig) (*HTTPOp, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("http op: no endpoints")
	}
	if cfg.Sale == "" {
		return nil, errors.New("http op: no sale (itemId)")
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("http op: timeout %v: want > 0", cfg.Timeout)
	}
	if cfg.Retries < 0 {
		return nil, fmt.Errorf("http op: retries %d: want >= 0", cfg.Retries)
	}
	for _, f := range []float64{cfg.MisrouteFrac, cfg.ConfirmFrac, cfg.CancelFrac, cfg.ConfirmFrac + cfg.CancelFrac} {
		if f < 0 || f > 1 {
			return nil, fmt.Errorf("http op: fractions misroute %v confirm %v cancel %v: each in [0,1], confirm+cancel <= 1", cfg.MisrouteFrac, cfg.ConfirmFrac, cfg.CancelFrac)
		}
	}
	eps := map[string]string{}
	var regions []string
	for r, ep := range cfg.Endpoints {
		if err := CheckLoopback(ep); err != nil {
			return nil, fmt.Errorf("http op: region %s: %w", r, err)
		}
		eps[r] = strings.TrimRight(ep, "/")
		regions = append(regions, r)
	}
	cfg.Endpoints = eps
	slices.Sort(regions)
	tr := &http.Transport{
		Proxy:               nil, // never through an environment proxy: loopback only
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 16384, // the goodput curve keeps 8,000 connections open
		MaxConnsPerHost:     cfg.MaxConns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	client := &http.Client{
		Transport: tr,
		// Redirects are followed by hand: each hop is checked to stay on
		// loopback and counted.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &HTTPOp{cfg: cfg, regions: regions, client: client}, nil
}

// Close drops idle connections.
func (o *HTTPOp) Close() {
	if o != nil {
		o.client.CloseIdleConnections()
	}
}

// CheckLoopback refuses any URL whose host is not a loopback address, so
// the generator cannot be aimed at a real deployment.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q: want http://127.0.0.1:port", raw)
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("endpoint %q: only loopback hosts (127.0.0.1, ::1, localhost) are allowed", raw)
}

type buyBody struct {
	ItemID    string `json:"itemId"`
	UserID    string `json:"userId"`
	RequestID string `json:"requestId"`
}

type answer struct {
	ReservationID string `json:"reservationId"`
	Code          string `json:"code"`
	RetryAfterMs  int64  `json:"retryAfterMs"`
}

// Do implements Op.
func (o *HTTPOp) Do(ctx context.Context, a Attempt) Result {
	home, ok := o.cfg.Endpoints[a.User.Region]
	if !ok {
		return Result{Outcome: "no_endpoint", Err: fmt.Errorf("no endpoint for region %s", a.User.Region)}
	}
	target := home
	if o.cfg.MisrouteFrac > 0 && len(o.regions) > 1 && frac(a.Seq, 1) < o.cfg.MisrouteFrac {
		for i := range o.regions {
			r := o.regions[(a.Seq+i)%len(o.regions)]
			if r != a.User.Region {
				target = o.cfg.Endpoints[r]
				break
			}
		}
	}
	var token string
	if o.cfg.Signer != nil {
		var err error
		if token, err = o.cfg.Signer.Token(a.User); err != nil {
			return Result{Outcome: OutcomeError, Err: err}
		}
	}
	body, _ := json.Marshal(buyBody{ItemID: o.cfg.Sale, UserID: a.User.ID, RequestID: a.RequestID})
	var last Result
	lost := false // a try's answer was lost: it may have reserved
	for try := 0; try <= o.cfg.Retries; try++ {
		status, ans, err := o.post(ctx, target+BuyPath, token, body)
		switch {
		case err != nil:
			lost = true
			last = Result{Outcome: "timeout", Err: err}
			if ctx.Err() != nil {
				return last
			}
			continue // same requestId: a reservation made by the lost try is returned, not doubled
		case status == http.StatusCreated:
			return Result{Outcome: OutcomeReserved, Reserved: true, ReservationID: ans.ReservationID}
		case status == http.StatusOK:
			// A retry found the reservation an earlier try made.
			return Result{Outcome: OutcomeReserved, Reserved: true, ReservationID: ans.ReservationID}
		case lost && status == http.StatusServiceUnavailable:
			// A retry refused without running (overloaded, not ready)
			// says nothing of the lost try: the buyer does not know.
			return Result{Outcome: "outcome_unknown", RetryAfter: time.Duration(ans.RetryAfterMs) * time.Millisecond}
		case ans.Code != "":
			return Result{Outcome: ans.Code, RetryAfter: time.Duration(ans.RetryAfterMs) * time.Millisecond}
		default:
			return Result{Outcome: "http_" + strconv.Itoa(status)}
		}
	}
	return last
}

// post sends body and follows up to 3 redirects to loopback hosts.
func (o *HTTPOp) post(ctx context.Context, u, token string, body []byte) (int, answer, error) {
	for hop := 0; ; hop++ {
		tctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
		req, err := http.NewRequestWithContext(tctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			cancel()
			return 0, answer{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := o.client.Do(req)
		if err != nil {
			cancel()
			return 0, answer{}, err
		}
		var ans answer
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		if rerr != nil {
			return 0, answer{}, rerr
		}
		_ = json.Unmarshal(b, &ans) // a non-JSON answer is reported by status
		if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
			return resp.StatusCode, ans, nil
		}
		if hop == 3 {
			return resp.StatusCode, answer{Code: "redirect_loop"}, nil
		}
		loc, err := resp.Location()
		if err != nil {
			return resp.StatusCode, answer{Code: "bad_redirect"}, nil
		}
		if err := CheckLoopback(loc.String()); err != nil {
			return resp.StatusCode, answer{Code: "redirect_off_loopback"}, nil
		}
		u = loc.String()
	}
}

// Follow implements Follower: confirm or cancel, by a fraction drawn from
// the attempt's sequence number.
func (o *HTTPOp) Follow(ctx context.Context, a Attempt, r Result) []Sample {
	if r.ReservationID == "" {
		return nil
	}
	f := frac(a.Seq, 2)
	var verb, prefix string
	switch {
	case f < o.cfg.ConfirmFrac:
		verb, prefix = "confirm", ConfirmPrefix
	case f < o.cfg.ConfirmFrac+o.cfg.CancelFrac:
		verb, prefix = "cancel", CancelPrefix
	default:
		return nil // left to expire
	}
	var token string
	if o.cfg.Signer != nil {
		var err error
		if token, err = o.cfg.Signer.Token(a.User); err != nil {
			return []Sample{{Outcome: prefix + OutcomeError}}
		}
	}
	body, _ := json.Marshal(struct {
		ItemID string `json:"itemId"`
		UserID string `json:"userId"`
	}{o.cfg.Sale, a.User.ID})
	u := o.cfg.Endpoints[a.User.Region] + resvPathBase + url.PathEscape(r.ReservationID) + "/" + verb
	start := time.Now()
	outcome := "timeout"
	for try := 0; try <= o.cfg.Retries && outcome == "timeout"; try++ {
		// Confirm and cancel are idempotent, so a timed-out try is repeated.
		status, ans, err := o.post(ctx, u, token, body)
		switch {
		case err != nil:
		case status == http.StatusOK:
			outcome = "ok"
		case ans.Code != "":
			outcome = ans.Code
		default:
			outcome = "http_" + strconv.Itoa(status)
		}
	}
	return []Sample{{Outcome: prefix + outcome, Latency: time.Since(start)}}
}

// frac is a deterministic number in [0,1) for an attempt and a purpose.
func frac(seq int, salt uint64) float64 {
	return float64(splitmix(uint64(seq)*0x9e37+salt)>>11) / (1 << 53)
}
