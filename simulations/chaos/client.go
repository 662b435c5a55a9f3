package chaos

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
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"flashsale/internal/devtoken"
	"flashsale/simulations/loadgen"
)

// buyer is one chaos client: it buys, then confirms, cancels or keeps the
// unit (and then tries a second unit, which the per-user limit must
// refuse), one user after another, recording every request. It talks only
// to its region's seller, on loopback.
type buyer struct {
	id     int
	region string
	base   string
	sale   string
	rec    *Recorder
	hc     *http.Client
	seq    atomic.Int64 // users used
	tries  int          // tries per request before giving up on it
	kept   []keptUnit   // the last units it kept, revisited (steady's goroutine only)
}

// keptUnit is a reservation a buyer kept: its user and requestId.
type keptUnit struct{ user, req string }

func newBuyer(id int, region, base, sale string, rec *Recorder) (*buyer, error) {
	if err := loadgen.CheckLoopback(base); err != nil {
		return nil, err
	}
	tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext, MaxIdleConnsPerHost: 4}
	return &buyer{id: id, region: region, base: base, sale: sale, rec: rec, tries: 20,
		hc: &http.Client{Transport: tr, Timeout: 2 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

type answer struct {
	ReservationID string `json:"reservationId"`
	Code          string `json:"code"`
	RetryAfterMs  int64  `json:"retryAfterMs"`
}

// do sends one request and records it. It returns the op and how long the
// seller asked the client to wait before a retry.
func (b *buyer) do(ctx context.Context, op Op, path string, body any, user string) (Op, time.Duration) {
	tok, _ := devtoken.Sign([]byte(jwtSecret), user, b.region, time.Now(), time.Hour)
	raw, _ := json.Marshal(body)
	op.Client, op.Region, op.User = b.id, b.region, user
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+path, bytes.NewReader(raw))
	if err != nil {
		op.Result, op.Code = Refused, err.Error()
		return op, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	op.Call = b.rec.Now()
	resp, err := b.hc.Do(req)
	var ans answer
	status := 0
	if err == nil {
		status = resp.StatusCode
		data, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if rerr != nil {
			err = rerr
		} else {
			_ = json.Unmarshal(data, &ans)
		}
	}
	op.Return = b.rec.Now()
	wait := time.Duration(ans.RetryAfterMs) * time.Millisecond
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		// Nothing reached a seller (it is down): nothing was done.
		op.Result, op.Code = Refused, "connection_refused"
		wait = 100 * time.Millisecond
	case err != nil:
		op.Result, op.Code = Unknown, "timeout"
	default:
		op.Code = ans.Code
		if op.Code == "" {
			op.Code = "http_" + strconv.Itoa(status)
		}
		op.Result = classify(op.Kind, status, ans.Code)
		if op.Result == Reserved {
			op.Resv = ans.ReservationID
		}
	}
	b.rec.Add(op)
	return op, min(max(wait, 20*time.Millisecond), 500*time.Millisecond)
}

// classify reads an answer as the model does (see Result).
func classify(kind Kind, status int, code string) Result {
	switch code {
	case "outcome_unknown", "unavailable":
		// The script may have run (unavailable: a store error after it was
		// sent, or before: either way).
		return Unknown
	case "already_bought":
		return AlreadyBought
	case "sold_out":
		return SoldOut
	case "not_active":
		return NotActive
	case "unknown_reservation":
		return NoSuchResv
	}
	switch {
	case kind == Buy && (status == http.StatusCreated || status == http.StatusOK):
		return Reserved
	case kind != Buy && status == http.StatusOK:
		return OK
	case code == "" && status >= 500:
		return Unknown // an answer from something that is not the seller's funnel
	}
	return Refused
}

// retryable says the client should send the same request again.
func retryable(r Result) bool { return r == Refused || r == Unknown }

// buy tries one requestId until it gets a definite answer, the tries run
// out or ctx ends.
func (b *buyer) buy(ctx context.Context, user, req string) Op {
	var op Op
	for try := 0; try < b.tries && ctx.Err() == nil; try++ {
		var wait time.Duration
		op, wait = b.do(ctx, Op{Kind: Buy, Req: req}, loadgen.BuyPath, map[string]string{"itemId": b.sale, "requestId": req}, user)
		if !retryable(op.Result) {
			return op
		}
		if !sleepCtx(ctx, wait) {
			break
		}
	}
	return op
}

func (b *buyer) finish(ctx context.Context, kind Kind, user, resv string) Op {
	var op Op
	path := "/v1/flash-sale/reservations/" + url.PathEscape(resv) + "/" + string(kind)
	for try := 0; try < b.tries && ctx.Err() == nil; try++ {
		var wait time.Duration
		op, wait = b.do(ctx, Op{Kind: kind, Resv: resv}, path, map[string]string{"itemId": b.sale}, user)
		if !retryable(op.Result) {
			return op
		}
		if !sleepCtx(ctx, wait) {
			break
		}
	}
	return op
}

// steady buys at a bounded pace until ctx ends or the recorder is full.
// Of the units it gets, half are confirmed, three in ten cancelled (their
// unit goes back to stock) and the rest kept, after which the same user
// tries once more under a new requestId (the per-user limit must refuse);
// the last kept ones are retried with their requestId now and then.
func (b *buyer) steady(ctx context.Context, pace time.Duration) {
	for ctx.Err() == nil && !b.rec.Full() {
		k := b.seq.Add(1)
		user := fmt.Sprintf("c%d-u%d", b.id, k)
		op := b.buy(ctx, user, fmt.Sprintf("c%d-r%d", b.id, k))
		if op.Result == Reserved {
			switch k % 10 {
			case 0, 1, 2, 3, 4:
				b.finish(ctx, Confirm, user, op.Resv)
			case 5, 6, 7:
				b.finish(ctx, Cancel, user, op.Resv)
			default:
				b.buy(ctx, user, fmt.Sprintf("c%d-r%db", b.id, k))
				b.kept = append(b.kept, keptUnit{user, fmt.Sprintf("c%d-r%d", b.id, k)})
				if len(b.kept) > 8 {
					b.kept = b.kept[1:]
				}
			}
		}
		// Every third user, a kept unit's buyer retries its request: the
		// answer must be the same reservation (a Redis that lost it and
		// sells at once answers a new one).
		if k%3 == 0 && len(b.kept) > 0 {
			u := b.kept[int(k/3)%len(b.kept)]
			b.buy(ctx, u.user, u.req)
		}
		if !sleepCtx(ctx, pace) {
			return
		}
	}
}

// sellout buys with new users as fast as answers come, until ctx ends or
// the recorder is full: what is left unsold after it is stranded.
func (b *buyer) sellout(ctx context.Context) {
	for ctx.Err() == nil && !b.rec.Full() {
		k := b.seq.Add(1)
		op := b.buy(ctx, fmt.Sprintf("c%d-u%d", b.id, k), fmt.Sprintf("c%d-r%d", b.id, k))
		if op.Result != Reserved && !sleepCtx(ctx, 50*time.Millisecond) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
