package chaos

import (
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The sale as one sequential object, the reference a linearizable history
// must match: one global stock (no regions, no quota: a region refusing
// for want of quota is a refusal that changes nothing), per-user holdings
// and idempotent requestIds. Reservations do not expire in the model: the
// chaos sales use a TTL far longer than a run.

// resvState is a reservation's state in the model.
type resvState byte

const (
	active    resvState = 'a'
	confirmed resvState = 'c'
	cancelled resvState = 'x'
)

type resvEntry struct {
	user  string
	state resvState
}

// saleState is immutable once built: every step copies it.
type saleState struct {
	free, sold int64             // free: neither sold nor reserved
	users      map[string]int64  // user -> active + confirmed
	reqs       map[string]string // requestId -> reservation id ("?"+requestId: made by a buy whose answer was lost)
	resv       map[string]resvEntry
	key        string // canonical form, for Equal and Hash
}

func (s *saleState) clone() *saleState {
	return &saleState{free: s.free, sold: s.sold, users: cloneMap(s.users), reqs: cloneMap(s.reqs), resv: cloneMap(s.resv)}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// seal computes the canonical key; users is derived from resv, so it is
// left out.
func (s *saleState) seal() *saleState {
	var b strings.Builder
	fmt.Fprintf(&b, "free=%d sold=%d", s.free, s.sold)
	reqs := make([]string, 0, len(s.reqs))
	for k, v := range s.reqs {
		reqs = append(reqs, k+"="+v)
	}
	slices.Sort(reqs)
	ids := make([]string, 0, len(s.resv))
	for id, e := range s.resv {
		ids = append(ids, id+":"+e.user+":"+string(e.state))
	}
	slices.Sort(ids)
	b.WriteString(" req{" + strings.Join(reqs, ",") + "} resv{" + strings.Join(ids, ",") + "}")
	s.key = b.String()
	return s
}

// placeholder is the id of a reservation made by a buy whose answer was
// lost: a later answer to the same requestId names it.
func placeholder(req string) string { return "?" + req }

// reserve returns s with a new active reservation id for user, or nil if
// the sale or the user's limit does not allow it.
func (s *saleState) reserve(limit int64, user, req, id string) *saleState {
	if s.free <= 0 || s.users[user] >= limit {
		return nil
	}
	if _, taken := s.resv[id]; taken {
		return nil
	}
	n := s.clone()
	n.free--
	n.users[user]++
	n.reqs[req] = id
	n.resv[id] = resvEntry{user: user, state: active}
	return n.seal()
}

// bind renames a placeholder reservation to the id an answer named.
func (s *saleState) bind(req, id string) *saleState {
	ph := placeholder(req)
	if _, taken := s.resv[id]; taken {
		return nil
	}
	n := s.clone()
	n.reqs[req] = id
	n.resv[id] = n.resv[ph]
	delete(n.resv, ph)
	return n.seal()
}

func (s *saleState) finish(id string, to resvState) *saleState {
	n := s.clone()
	e := n.resv[id]
	switch to {
	case confirmed:
		n.sold++
	case cancelled:
		n.free++
		n.users[e.user]--
	}
	e.state = to
	n.resv[id] = e
	return n.seal()
}

// step is the nondeterministic model: every state the sale can be in after
// op answered as it did, from s (none: the answer is impossible).
func step(total, limit int64, s *saleState, op Op) []*saleState {
	same := []*saleState{s}
	switch op.Kind {
	case Buy:
		if id, known := s.reqs[op.Req]; known {
			switch op.Result {
			case Reserved:
				if id == op.Resv {
					return same
				}
				if id == placeholder(op.Req) {
					if n := s.bind(op.Req, op.Resv); n != nil {
						return []*saleState{n}
					}
				}
				return nil
			case Refused, Unknown:
				return same
			case SoldOut:
				if s.sold == total {
					return same
				}
			}
			// A known requestId is answered with its reservation before
			// any per-user or stock check.
			return nil
		}
		switch op.Result {
		case Reserved:
			if n := s.reserve(limit, op.User, op.Req, op.Resv); n != nil {
				return []*saleState{n}
			}
			return nil
		case Unknown:
			if n := s.reserve(limit, op.User, op.Req, placeholder(op.Req)); n != nil {
				return []*saleState{s, n}
			}
			return same
		case Refused:
			return same
		case AlreadyBought:
			if s.users[op.User] >= limit {
				return same
			}
		case SoldOut:
			if s.sold == total {
				return same
			}
		}
		return nil
	case Confirm, Cancel:
		e, ok := s.resv[op.Resv]
		if !ok {
			// The buy that named this id returned before this call began,
			// so it is in every state this call can see: only a refusal or
			// an unknown answer says nothing here.
			if op.Result == Refused || op.Result == Unknown {
				return same
			}
			return nil
		}
		to, other := confirmed, cancelled
		if op.Kind == Cancel {
			to, other = cancelled, confirmed
		}
		switch {
		case op.Result == Refused:
			return same
		case op.Result == Unknown && e.state == active:
			return []*saleState{s, s.finish(op.Resv, to)}
		case op.Result == Unknown:
			return same
		case op.Result == OK && e.state == active:
			return []*saleState{s.finish(op.Resv, to)}
		case op.Result == OK && e.state == to:
			return same
		case op.Result == NotActive && e.state == other:
			return same
		}
		return nil
	}
	return nil
}

// Model is the sale of total units, limit per user, as a porcupine model.
// Each operation's Input is its Op.
func Model(total, limit int64) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any {
			return []any{(&saleState{free: total, users: map[string]int64{}, reqs: map[string]string{}, resv: map[string]resvEntry{}}).seal()}
		},
		Step: func(state, input, _ any) []any {
			var out []any
			for _, n := range step(total, limit, state.(*saleState), input.(Op)) {
				out = append(out, n)
			}
			return out
		},
		Equal: func(a, b any) bool { return a.(*saleState).key == b.(*saleState).key },
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			_, _ = h.Write([]byte(state.(*saleState).key))
			return h.Sum64()
		},
		DescribeOperation: func(input, _ any) string { return describeOp(input.(Op)) },
		DescribeState: func(state any) string {
			s := state.(*saleState)
			return fmt.Sprintf("free %d, sold %d, %d reservations, %d requests", s.free, s.sold, len(s.resv), len(s.reqs))
		},
	}
	return nm.ToModel()
}

func describeOp(op Op) string {
	var what string
	switch op.Kind {
	case Buy:
		what = fmt.Sprintf("buy(%s, %s)", op.User, op.Req)
	default:
		what = fmt.Sprintf("%s(%s, %s)", op.Kind, op.User, op.Resv)
	}
	out := string(op.Result)
	if op.Result == Reserved && op.Kind == Buy {
		out += " " + op.Resv
	}
	if op.Code != "" && op.Code != string(op.Result) {
		out += " [" + op.Code + "]"
	}
	return what + " -> " + out
}

// Operations turns a history into porcupine's form. An unknown answer may
// take effect at any time after its call, so it returns at the end of the
// history.
func Operations(ops []Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Return, op.Call)
	}
	out := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		ret := op.Return
		if op.Result == Unknown {
			ret = end + 1
		}
		out[i] = porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Output: op.Result, Return: ret}
	}
	return out
}

// HistoryCheck is one history's verdict.
type HistoryCheck struct {
	Result  porcupine.CheckResult
	Ops     int
	Unknown int // answers whose outcome the client never learned
	Took    time.Duration
	HTML    string // the visualization, written when the check failed
}

// CheckHistory checks ops against the model of a sale of total units with
// limit per user, giving up after timeout (Result Unknown). When the
// history is not linearizable and htmlPath is set, porcupine's
// visualization is written there.
func CheckHistory(ops []Op, total, limit int64, timeout time.Duration, htmlPath string) (HistoryCheck, error) {
	hc := HistoryCheck{Ops: len(ops)}
	for _, op := range ops {
		if op.Result == Unknown {
			hc.Unknown++
		}
	}
	if timeout <= 0 {
		timeout = math.MaxInt64
	}
	m := Model(total, limit)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(m, Operations(ops), timeout)
	hc.Result, hc.Took = res, time.Since(start)
	if res == porcupine.Illegal && htmlPath != "" {
		if err := os.MkdirAll(filepath.Dir(htmlPath), 0o755); err != nil {
			return hc, err
		}
		if err := porcupine.VisualizePath(m, info, htmlPath); err != nil {
			return hc, fmt.Errorf("porcupine visualization: %w", err)
		}
		hc.HTML = htmlPath
	}
	return hc, nil
}
