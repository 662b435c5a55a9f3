package chaos

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// The sale as one sequential object, the reference a linearizable history
// must match: one global stock (no regions, no quota: a region refusing
// for want of quota is a refusal that changes nothing), per-user holdings
// and idempotent requestIds. Reservations do not expire in the model: the
// chaos sales use a TTL far longer than a run.

// resvState is a reservation's state in the model (0: not made).
type resvState byte

const (
	active    resvState = 'a'
	confirmed resvState = 'c'
	cancelled resvState = 'x'
)

// Every requestId, reservation id and user of a history gets an index
// before the check, so a state is a few flat slices: a step copies them
// (about a kilobyte for a thousand operations) instead of maps.
const (
	reqNone        = -1 // the requestId was never reserved
	reqPlaceholder = -2 // reserved by a try whose answer was lost; the id is not known yet
)

// saleState is immutable once built: every step copies it.
type saleState struct {
	free, sold int64
	reqs       []int32     // requestId -> reservation index, reqNone or reqPlaceholder
	resv       []resvState // reservation -> state
	users      []int32     // user -> active + confirmed units
}

func (s *saleState) clone() *saleState {
	return &saleState{free: s.free, sold: s.sold, reqs: slices.Clone(s.reqs), resv: slices.Clone(s.resv), users: slices.Clone(s.users)}
}

func (s *saleState) hash() uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, v := range []int64{s.free, s.sold} {
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		_, _ = h.Write(b[:])
	}
	for _, v := range s.reqs {
		binary.LittleEndian.PutUint32(b[:4], uint32(v))
		_, _ = h.Write(b[:4])
	}
	for _, v := range s.resv {
		_, _ = h.Write([]byte{byte(v)})
	}
	return h.Sum64() // users is derived from reqs and resv
}

func equalStates(a, b *saleState) bool {
	return a.free == b.free && a.sold == b.sold && slices.Equal(a.reqs, b.reqs) && slices.Equal(a.resv, b.resv)
}

// indexedOp is an Op with the indices of its requestId, reservation and
// user (-1: none).
type indexedOp struct {
	Op
	req, resv, user int32
	resvUser        []int32 // the user of each reservation index (shared)
}

// indexer numbers the requestIds, reservation ids and users of a history.
type indexer struct {
	reqs, resv, users map[string]int32
	resvUser          []int32
}

func newIndexer(ops []Op) *indexer {
	ix := &indexer{reqs: map[string]int32{}, resv: map[string]int32{}, users: map[string]int32{}}
	num := func(m map[string]int32, k string) int32 {
		if k == "" {
			return -1
		}
		if i, ok := m[k]; ok {
			return i
		}
		m[k] = int32(len(m))
		return m[k]
	}
	for _, op := range ops {
		num(ix.reqs, op.Req)
		u := num(ix.users, op.User)
		if op.Resv != "" {
			if _, ok := ix.resv[op.Resv]; !ok {
				num(ix.resv, op.Resv)
				ix.resvUser = append(ix.resvUser, u)
			}
		}
	}
	return ix
}

func (ix *indexer) index(op Op) indexedOp {
	get := func(m map[string]int32, k string) int32 {
		if i, ok := m[k]; ok && k != "" {
			return i
		}
		return -1
	}
	return indexedOp{Op: op, req: get(ix.reqs, op.Req), resv: get(ix.resv, op.Resv), user: get(ix.users, op.User), resvUser: ix.resvUser}
}

func (ix *indexer) init(total int64) *saleState {
	s := &saleState{free: total, reqs: make([]int32, len(ix.reqs)), resv: make([]resvState, len(ix.resv)), users: make([]int32, len(ix.users))}
	for i := range s.reqs {
		s.reqs[i] = reqNone
	}
	return s
}

// reserve returns s with req reserved for user as reservation id (an
// index, or reqPlaceholder), or nil if the stock, the user's limit or an
// id already made does not allow it.
func (s *saleState) reserve(limit int64, user, req, id int32) *saleState {
	if s.free <= 0 || int64(s.users[user]) >= limit {
		return nil
	}
	if id >= 0 && s.resv[id] != 0 {
		return nil
	}
	n := s.clone()
	n.free--
	n.users[user]++
	n.reqs[req] = id
	if id >= 0 {
		n.resv[id] = active
	}
	return n
}

// bind names the reservation a lost try made.
func (s *saleState) bind(req, id int32) *saleState {
	if s.resv[id] != 0 {
		return nil
	}
	n := s.clone()
	n.reqs[req] = id
	n.resv[id] = active
	return n
}

func (s *saleState) finish(id, user int32, to resvState) *saleState {
	n := s.clone()
	switch to {
	case confirmed:
		n.sold++
	case cancelled:
		n.free++
		n.users[user]--
	}
	n.resv[id] = to
	return n
}

// step is the nondeterministic model: every state the sale can be in after
// op answered as it did, from s (none: the answer is impossible).
func step(total, limit int64, s *saleState, op indexedOp) []*saleState {
	same := []*saleState{s}
	switch op.Kind {
	case Buy:
		if op.req < 0 || op.user < 0 {
			return nil
		}
		if id := s.reqs[op.req]; id != reqNone {
			switch op.Result {
			case Reserved:
				if id == op.resv {
					return same
				}
				if id == reqPlaceholder && op.resv >= 0 {
					if n := s.bind(op.req, op.resv); n != nil {
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
			if op.resv < 0 {
				return nil
			}
			if n := s.reserve(limit, op.user, op.req, op.resv); n != nil {
				return []*saleState{n}
			}
			return nil
		case Unknown:
			if n := s.reserve(limit, op.user, op.req, reqPlaceholder); n != nil {
				return []*saleState{s, n}
			}
			return same
		case Refused:
			return same
		case AlreadyBought:
			if int64(s.users[op.user]) >= limit {
				return same
			}
		case SoldOut:
			if s.sold == total {
				return same
			}
		}
		return nil
	case Confirm, Cancel:
		if op.resv < 0 || s.resv[op.resv] == 0 {
			// The buy that named this id returned before this call began,
			// so it is in every state this call can see: only a refusal or
			// an unknown answer says nothing here.
			if op.Result == Refused || op.Result == Unknown {
				return same
			}
			return nil
		}
		st, user := s.resv[op.resv], op.resvUser[op.resv]
		to, other := confirmed, cancelled
		if op.Kind == Cancel {
			to, other = cancelled, confirmed
		}
		switch {
		case op.Result == Refused:
			return same
		case op.Result == Unknown && st == active:
			return []*saleState{s, s.finish(op.resv, user, to)}
		case op.Result == Unknown:
			return same
		case op.Result == OK && st == active:
			return []*saleState{s.finish(op.resv, user, to)}
		case op.Result == OK && st == to:
			return same
		case op.Result == NotActive && st == other:
			return same
		}
		return nil
	}
	return nil
}

// Model is the sale of total units, limit per user, as a porcupine model
// of the history ops (whose ids it numbers). Each operation's Input is an
// indexed Op, as Operations makes it from the same history.
func Model(total, limit int64, ops []Op) porcupine.Model {
	ix := newIndexer(ops)
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{ix.init(total)} },
		Step: func(state, input, _ any) []any {
			var out []any
			for _, n := range step(total, limit, state.(*saleState), input.(indexedOp)) {
				out = append(out, n)
			}
			return out
		},
		Equal:             func(a, b any) bool { return equalStates(a.(*saleState), b.(*saleState)) },
		Hash:              func(state any) uint64 { return state.(*saleState).hash() },
		DescribeOperation: func(input, _ any) string { return describeOp(input.(indexedOp).Op) },
		DescribeState: func(state any) string {
			s := state.(*saleState)
			made := 0
			for _, r := range s.resv {
				if r != 0 {
					made++
				}
			}
			return fmt.Sprintf("free %d, sold %d, %d reservations", s.free, s.sold, made)
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

// Operations turns a history into porcupine's form, with two reductions
// that keep the verdict and cut the search:
//   - refusals are left out: the model steps every state to itself on
//     one, so one fits anywhere in any linearization;
//   - an unknown answer may take effect at any time after its call, so it
//     returns at the end of the history, unless a later definite answer
//     settles it: once a requestId is reserved, or a reservation is
//     confirmed or cancelled, a late effect of an earlier try is a no-op,
//     so the try is as if it had taken effect, or not, before that answer
//     returned.
func Operations(ops []Op) []porcupine.Operation {
	var end int64
	settledReq := map[string][]int64{}  // requestId -> returns of its reserved answers
	settledResv := map[string][]int64{} // reservation -> returns of its definite confirm/cancel answers
	for _, op := range ops {
		end = max(end, op.Return, op.Call)
		switch {
		case op.Kind == Buy && op.Result == Reserved:
			settledReq[op.Req] = append(settledReq[op.Req], op.Return)
		case op.Kind != Buy && (op.Result == OK || op.Result == NotActive):
			settledResv[op.Resv] = append(settledResv[op.Resv], op.Return)
		}
	}
	settle := func(returns []int64, call int64) int64 {
		best := end + 1
		for _, r := range returns {
			if r >= call && r < best {
				best = r
			}
		}
		return best
	}
	ix := newIndexer(ops)
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Result == Refused {
			continue
		}
		ret := op.Return
		if op.Result == Unknown {
			if op.Kind == Buy {
				ret = settle(settledReq[op.Req], op.Call)
			} else {
				ret = settle(settledResv[op.Resv], op.Call)
			}
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: ix.index(op), Call: op.Call, Output: op.Result, Return: ret})
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
	m := Model(total, limit, ops)
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
