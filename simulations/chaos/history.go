package chaos

import (
	"sync"
	"time"
)

// Kind is what a client asked the seller.
type Kind string

const (
	Buy     Kind = "buy"
	Confirm Kind = "confirm"
	Cancel  Kind = "cancel"
)

// Result is how an answer bears on the sale, as the model reads it.
type Result string

const (
	// Reserved: 201 or 200 with a reservation id (a new one, or the
	// requestId's earlier one).
	Reserved Result = "reserved"
	// Refused: an answer that says nothing was done (quota_pending,
	// all_reserved, overloaded, halted, not_ready, rate_limited, a refused
	// connection: the request never reached a seller). It changes nothing.
	Refused Result = "refused"
	// AlreadyBought: the user holds the per-user limit.
	AlreadyBought Result = "already_bought"
	// SoldOut: 410, every unit of the sale is sold.
	SoldOut Result = "sold_out"
	// OK: confirm or cancel done (or done before: both are idempotent).
	OK Result = "ok"
	// NotActive: confirm of a cancelled reservation, cancel of a confirmed
	// one.
	NotActive Result = "not_active"
	// NoSuchResv: the region does not know the reservation.
	NoSuchResv Result = "unknown_reservation"
	// Unknown: the request may or may not have taken effect, then or at
	// any later time (a timeout, a cut connection, outcome_unknown, a
	// store error after the script was sent). Its return time is taken as
	// the end of the history.
	Unknown Result = "unknown"
)

// Op is one HTTP request of a chaos client and its answer.
type Op struct {
	Client int    `json:"client"`
	Region string `json:"region"`
	Kind   Kind   `json:"kind"`
	User   string `json:"user"`
	Req    string `json:"req,omitempty"`  // the buy's requestId
	Resv   string `json:"resv,omitempty"` // the reservation confirmed or cancelled, or the one a buy got
	Call   int64  `json:"call"`           // ns since the recorder's start
	Return int64  `json:"return"`
	Result Result `json:"result"`
	Code   string `json:"code,omitempty"` // the answer's code or status, for the reader
}

// Recorder collects a run's operations. Safe for concurrent use.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
	limit int
}

// NewRecorder returns a recorder that keeps at most limit operations (the
// clients stop when it is full, so histories stay checkable).
func NewRecorder(limit int) *Recorder {
	return &Recorder{start: time.Now(), limit: limit}
}

// Now is the recorder's clock: monotonic nanoseconds since its start.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// At converts a recorder timestamp back to wall time.
func (r *Recorder) At(ns int64) time.Time { return r.start.Add(time.Duration(ns)) }

// Add records op; it reports false once the recorder is full (the op is
// still kept: it was sent, and its effect must be in the history).
func (r *Recorder) Add(op Op) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	return len(r.ops) < r.limit
}

// Full says the recorder holds its limit.
func (r *Recorder) Full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops) >= r.limit
}

// Ops returns a copy of the history so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}
