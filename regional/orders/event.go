package orders

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// State is an order row's state. Only reserved may change, and only to one
// of the three terminal states.
type State string

// Order row states.
const (
	Reserved  State = "reserved"
	Confirmed State = "confirmed"
	Cancelled State = "cancelled"
	Expired   State = "expired"
)

// Terminal says whether s never changes again.
func (s State) Terminal() bool { return s == Confirmed || s == Cancelled || s == Expired }

// Event types as written by the Lua scripts into the order stream.
const (
	TypeReserved  = "reserved"
	TypeConfirmed = "confirmed"
	TypeCancelled = "cancelled"
	TypeExpired   = "expired"
	TypeExtended  = "extended"
)

// Event is one order stream entry.
type Event struct {
	StreamID  string // Redis entry id, e.g. 1700000000000-0
	Type      string // reserved|confirmed|cancelled|expired|extended
	Sale      string
	Region    string
	Resv      string // reservation id, unique per sale and region
	User      string
	Req       string
	At        int64 // unix ms of the event
	ExpiresAt int64 // unix ms; on reserved and extended, else 0
	PaymentID string
}

// State is the row state this event drives the order towards.
func (e Event) State() State {
	switch e.Type {
	case TypeConfirmed:
		return Confirmed
	case TypeCancelled:
		return Cancelled
	case TypeExpired:
		return Expired
	}
	return Reserved // reserved, extended
}

// Fields renders e in the stream format (the inverse of ParseEvent), for
// tests and tools that append events with XADD.
func (e Event) Fields() map[string]any {
	f := map[string]any{
		"type": e.Type, "sale": e.Sale, "region": e.Region, "resv": e.Resv,
		"user": e.User, "req": e.Req, "at": strconv.FormatInt(e.At, 10),
	}
	if e.Type == TypeReserved || e.Type == TypeExtended {
		f["expiresAt"] = strconv.FormatInt(e.ExpiresAt, 10)
	}
	if e.PaymentID != "" {
		f["payment"] = e.PaymentID
	}
	return f
}

// Reject is a stream entry that cannot become an order row. It is written
// to order_rejects so the entry can be acknowledged without being lost.
type Reject struct {
	Sale, Region, StreamID string
	Resv, User, Type       string
	Reason                 string
	Fields                 string // the raw entry as JSON
}

// Batch is what one SQL transaction writes.
type Batch struct {
	Events  []Event
	Rejects []Reject
}

// Len is the number of stream entries the batch accounts for.
func (b Batch) Len() int { return len(b.Events) + len(b.Rejects) }

// ParseEvent reads a stream entry. It checks what the store relies on: a
// known type, non-empty ids, numeric times.
func ParseEvent(id string, values map[string]any) (Event, error) {
	str := func(k string) string {
		s, _ := values[k].(string)
		return s
	}
	e := Event{
		StreamID: id, Type: str("type"), Sale: str("sale"), Region: str("region"),
		Resv: str("resv"), User: str("user"), Req: str("req"), PaymentID: str("payment"),
	}
	switch e.Type {
	case TypeReserved, TypeConfirmed, TypeCancelled, TypeExpired, TypeExtended:
	default:
		return e, fmt.Errorf("entry %s: unknown type %q", id, e.Type)
	}
	for k, v := range map[string]string{"sale": e.Sale, "region": e.Region, "resv": e.Resv} {
		if v == "" {
			return e, fmt.Errorf("entry %s: missing %s", id, k)
		}
	}
	if e.Type == TypeReserved && e.User == "" {
		return e, fmt.Errorf("entry %s: reserved event without user", id)
	}
	var err error
	if e.At, err = strconv.ParseInt(str("at"), 10, 64); err != nil {
		return e, fmt.Errorf("entry %s: bad at %q: %w", id, str("at"), err)
	}
	if v := str("expiresAt"); v != "" {
		if e.ExpiresAt, err = strconv.ParseInt(v, 10, 64); err != nil {
			return e, fmt.Errorf("entry %s: bad expiresAt %q: %w", id, v, err)
		}
	}
	return e, nil
}

// rawJSON renders an entry's fields for order_rejects.
func rawJSON(values map[string]any) string {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := make(map[string]any, len(values))
	for _, k := range keys {
		m[k] = values[k]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
