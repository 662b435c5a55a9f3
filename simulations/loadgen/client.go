package loadgen

import (
	"bufio"
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
	"sync"
	"time"

	"github.com/valyala/fasthttp"
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
	// Timeout bounds one try. Retries is how many more tries an attempt
	// gets, always with the same requestId, after a timeout or a retryable
	// refusal (one carrying retryAfterMs or Retry-After: quota_pending,
	// all_reserved, unavailable, rate_limited, ...). A refusal is retried
	// after its retryAfterMs when the body has one, else its Retry-After
	// seconds. RetryFor bounds the time an attempt spends on retries: a
	// wait that would end past it is not taken (0: only Retries bounds).
	Timeout  time.Duration
	Retries  int
	RetryFor time.Duration
	// MisrouteFrac of attempts go to a region other than the user's home,
	// which must answer 307 to the home region (followed, up to 3 hops).
	MisrouteFrac float64
	// ConfirmFrac of the reservations are confirmed and CancelFrac
	// cancelled; the rest are left to expire.
	ConfirmFrac, CancelFrac float64
}

// HTTPOp buys through the shopper HTTP API: it is the Op the generator
// drives against real sellers and HTTP baselines alike.
//
// Its HTTP client is fasthttp's, not net/http's: the generator shares the
// machine's two cores with what it measures, and net/http's client runs
// two goroutines per connection (a reader and a writer) plus the caller's,
// handing each request between them over channels. Measured at 8,000
// connections against the seller, the generator then took more CPU than
// the seller (a core, 185 µs an answer against 66 µs at 64 connections),
// so the curve measured the generator. fasthttp's client does a request
// on the caller's goroutine, as wrk does in C.
//
// Each closed-loop client (Attempt.Client) has a connection of its own
// per seller, as a buyer's browser does, and uses only that one. The
// first version shared one pool among the workers, which measured
// something no buyers do: fasthttp hands out its oldest idle connection
// first, so after the 8,000-connection point the 64 workers of the
// recovery run sent every request on another of the 8,000 cold
// connections (every process on the machine, Redis included, paid ~25%
// more per request, and goodput stayed at 0.7 of the peak: "not
// recovered"), and the 8,000 point itself measured gentler than 8,000
// buyers each on its own connection (p99 of admitted tries 140-220 ms
// shared, 340-530 ms pinned, in the same day's runs). Attempts of no
// client (Client 0) share one pool, newest connection first.
type HTTPOp struct {
	cfg     HTTPConfig
	regions []string
	dialer  *predialer
	hosts   sync.Map // hostKey -> *fasthttp.HostClient; read on every request without a lock
}

// hostKey names the client of one server (host:port) for one buyer's
// client (0: the shared pool).
type hostKey struct {
	addr   string
	client int
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
	if cfg.RetryFor < 0 {
		return nil, fmt.Errorf("http op: retry-for %v: want >= 0 (0: no time bound)", cfg.RetryFor)
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
		if !strings.HasPrefix(ep, "http://") {
			return nil, fmt.Errorf("http op: region %s: endpoint %q: the generator speaks plain HTTP (http://127.0.0.1:port)", r, ep)
		}
		eps[r] = strings.TrimRight(ep, "/")
		regions = append(regions, r)
	}
	cfg.Endpoints = eps
	slices.Sort(regions)
	return &HTTPOp{cfg: cfg, regions: regions, dialer: &predialer{timeout: cfg.Timeout, ready: map[string][]net.Conn{}}}, nil
}

// host is the HTTP client of one server (host:port) for one buyer's
// client (0: the shared pool), made on first use.
func (o *HTTPOp) host(addr string, client int) *fasthttp.HostClient {
	k := hostKey{addr, client}
	if hc, ok := o.hosts.Load(k); ok {
		return hc.(*fasthttp.HostClient)
	}
	// A client has one connection; the shared pool (attempts of no
	// client) no cap of its own.
	maxConns := 1 << 20
	if client > 0 {
		maxConns = 1
	}
	hc, _ := o.hosts.LoadOrStore(k, &fasthttp.HostClient{
		Addr:                     addr,
		Dial:                     o.dialer.dial,
		MaxConns:                 maxConns,
		ConnPoolStrategy:         fasthttp.LIFO,
		MaxIdleConnDuration:      30 * time.Second,
		MaxResponseBodySize:      64 << 10,
		NoDefaultUserAgentHeader: true,
		// Retries are the op's own, always with the same requestId.
		MaxIdemponentCallAttempts: 1,
	})
	return hc.(*fasthttp.HostClient)
}

// predialer hands out the connections Connect opened ahead before it
// dials new ones.
type predialer struct {
	timeout time.Duration

	mu    sync.Mutex
	ready map[string][]net.Conn // by host:port
}

func (p *predialer) dial(addr string) (net.Conn, error) {
	p.mu.Lock()
	if cs := p.ready[addr]; len(cs) > 0 {
		c := cs[len(cs)-1]
		p.ready[addr] = cs[:len(cs)-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	return net.DialTimeout("tcp", addr, p.timeout)
}

func (p *predialer) count(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[addr])
}

func (p *predialer) add(addr string, c net.Conn) {
	p.mu.Lock()
	p.ready[addr] = append(p.ready[addr], c)
	p.mu.Unlock()
}

func (p *predialer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, cs := range p.ready {
		for _, c := range cs {
			_ = c.Close()
		}
		delete(p.ready, addr)
	}
}

// Close drops idle connections and those opened ahead and never used.
func (o *HTTPOp) Close() {
	if o == nil {
		return
	}
	o.hosts.Range(func(_, hc any) bool {
		hc.(*fasthttp.HostClient).CloseIdleConnections()
		return true
	})
	o.dialer.close()
}

// Connect opens n connections to every seller, at most wave dials at a
// time, and keeps them for the buys to come (counting those already
// open); it reports how many it holds (the smallest count over the
// sellers). A buyer waiting for a sale to open has loaded its page: its
// connection is open before the first buy. Without this a run of 8,000
// workers starts with 8,000 dials at once, which on two cores takes
// seconds and can overflow the seller's accept queue (a SYN dropped is
// sent again after 1 s): the first seconds of the run measure the dials.
func (o *HTTPOp) Connect(ctx context.Context, n, wave int) (int, error) {
	wave = max(1, wave)
	held := n
	for _, ep := range o.cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			return 0, fmt.Errorf("connect to %s: %w", ep, err)
		}
		addr := fasthttp.AddMissingPort(u.Host, false)
		have := func() int { return o.conns(addr) + o.dialer.count(addr) }
		for have() < n && ctx.Err() == nil {
			k, had := min(wave, n-have()), have()
			var wg sync.WaitGroup
			for range k {
				wg.Go(func() {
					if c, err := o.warm(ctx, addr); err == nil {
						o.dialer.add(addr, c)
					}
				})
			}
			wg.Wait()
			if have() == had {
				return 0, fmt.Errorf("connect to %s: a wave of %d opened no connection", ep, k)
			}
		}
		held = min(held, have())
	}
	return held, ctx.Err()
}

// conns counts the connections open to addr, over every client.
func (o *HTTPOp) conns(addr string) int {
	n := 0
	o.hosts.Range(func(k, hc any) bool {
		if k.(hostKey).addr == addr {
			n += hc.(*fasthttp.HostClient).ConnsCount()
		}
		return true
	})
	return n
}

// warm dials addr and asks GET /healthz (answered from memory) on the new
// connection: a connection the server has answered on was accepted and is
// served, idle in keep-alive. A bare dial is not enough: it completes in
// the kernel, and 6,000 of them in a few hundred ms overflow the server's
// accept queue (the ACK dropped, retransmitted a second later) and, never
// used, would each be closed at the server's ReadHeaderTimeout (measured:
// the 8,000-connection point's first 1.4 s answered nothing).
func (o *HTTPOp) warm(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: o.cfg.Timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(o.cfg.Timeout))
	resp, err := func() (*http.Response, error) {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			return nil, err
		}
		return http.ReadResponse(bufio.NewReader(c), nil)
	}()
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
			err = fmt.Errorf("GET /healthz: %s", resp.Status)
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
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
	// wait is how long the server asked us to wait before a retry:
	// retryAfterMs when given, else Retry-After; 0 for a final answer.
	wait time.Duration
}

// retryWait reads the retry hint of an answer: the body's finer,
// jittered retryAfterMs first, then the Retry-After header (whole
// seconds); 0 when neither is there (the answer is final).
func retryWait(retryAfter string, ans answer) time.Duration {
	if ans.RetryAfterMs > 0 {
		return time.Duration(ans.RetryAfterMs) * time.Millisecond
	}
	if secs, err := strconv.Atoi(retryAfter); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	return 0
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
	start := time.Now()
	for try := 0; ; try++ {
		tryStart := time.Now()
		status, ans, err := o.post(ctx, a.Client, target+BuyPath, token, body)
		tryTook := time.Since(tryStart)
		var res Result
		switch {
		case err != nil:
			lost = true
			res = Result{Outcome: "timeout", Err: err}
		case status == http.StatusCreated, status == http.StatusOK:
			// 200: a retry found the reservation an earlier try made.
			res = Result{Outcome: OutcomeReserved, Reserved: true, ReservationID: ans.ReservationID}
		case lost:
			// A retry refused (overloaded, not ready, rate limited, an
			// answer from memory) says nothing of the earlier try whose
			// outcome was lost or unknown: the buyer still does not know,
			// and must not report a failure that may hide a reservation.
			res = Result{Outcome: "outcome_unknown", RetryAfter: ans.wait}
		case ans.Code != "":
			res = Result{Outcome: ans.Code, RetryAfter: ans.wait}
		default:
			res = Result{Outcome: "http_" + strconv.Itoa(status)}
		}
		if ans.Code == "outcome_unknown" {
			// The seller sent this try to Redis and lost its answer: the
			// script may have run. Later refusals do not undo that.
			lost = true
		}
		res.Retries, res.Answers, res.LastTry = try, append(last.Answers, res.Outcome), tryTook
		last = res
		retryable := err != nil || ans.wait > 0
		if !retryable || try >= o.cfg.Retries || ctx.Err() != nil {
			return last
		}
		// Same requestId: a reservation made by a lost try is returned,
		// not doubled. A timeout is retried at once; a refusal after the
		// wait it asked for, unless that ends past the time bound.
		if o.cfg.RetryFor > 0 && time.Since(start)+ans.wait > o.cfg.RetryFor {
			return last
		}
		if !sleep(ctx, ans.wait) {
			return last
		}
	}
}

// sleep waits d or until ctx ends; it reports whether the wait was whole.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// post sends body, on the connections of client (see HTTPOp), and
// follows up to 3 redirects to loopback hosts. A try
// is bounded by the configured timeout (or ctx's deadline, if sooner); a
// cancelled ctx stops it between tries, not within one.
func (o *HTTPOp) post(ctx context.Context, client int, u, token string, body []byte) (int, answer, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for hop := 0; ; hop++ {
		if err := ctx.Err(); err != nil {
			return 0, answer{}, err
		}
		req.Reset()
		req.SetRequestURI(u)
		req.Header.SetMethod(http.MethodPost)
		req.Header.SetContentType("application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.SetBodyRaw(body)
		deadline := time.Now().Add(o.cfg.Timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := o.host(fasthttp.AddMissingPort(string(req.URI().Host()), false), client).DoDeadline(req, resp, deadline); err != nil {
			return 0, answer{}, err
		}
		var ans answer
		_ = json.Unmarshal(resp.Body(), &ans) // a non-JSON answer is reported by status
		ans.wait = retryWait(string(resp.Header.Peek("Retry-After")), ans)
		status := resp.StatusCode()
		if status != http.StatusTemporaryRedirect && status != http.StatusPermanentRedirect {
			return status, ans, nil
		}
		if hop == 3 {
			return status, answer{Code: "redirect_loop"}, nil
		}
		base, err := url.Parse(u)
		if err != nil {
			return status, answer{Code: "bad_redirect"}, nil
		}
		loc, err := base.Parse(string(resp.Header.Peek("Location")))
		if err != nil || len(resp.Header.Peek("Location")) == 0 {
			return status, answer{Code: "bad_redirect"}, nil
		}
		if err := CheckLoopback(loc.String()); err != nil {
			return status, answer{Code: "redirect_off_loopback"}, nil
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
		status, ans, err := o.post(ctx, a.Client, u, token, body)
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
