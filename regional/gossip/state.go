package gossip

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Kind names what a State says.
type Kind string

const (
	// KindStock is a sale's stock as a seller last read it from its Redis
	// (counters and the sale-wide view), from which every seller derives
	// the sale's phase: halted, open, quota pending, all reserved, sold out
	// (here or everywhere). One snapshot rather than one flag per phase,
	// because the phases are functions of the same figures and a receiver
	// must never combine flags of different ages. Region-wide: Member "".
	KindStock Kind = "stock"
	// KindDemand is one member's cumulative count of buy attempts per sale
	// (Node.PublishDemand); the agent turns the sum over live sellers
	// (Node.Demand) into a rate. Per member.
	KindDemand Kind = "demand"
)

// State is one fact gossiped in a region. For each (Sale, Kind, Member)
// the newest wins: the highest Version, ties broken by Origin, so that
// reordered or repeated messages are harmless. Redis and etcd stay the
// authority: a state only lets a seller answer before its own read.
type State struct {
	Sale string `json:"s"`
	Kind Kind   `json:"k"`
	// Member is "" for a region-wide fact, or the member the fact is about.
	Member string `json:"m,omitempty"`
	// Version orders the states of one key. For KindStock it is the Redis
	// server's clock (TIME, in microseconds) when the figures were read, so
	// every seller of the region orders reads by one clock.
	Version int64           `json:"v"`
	Origin  string          `json:"o"`
	Body    json.RawMessage `json:"b,omitempty"`
}

type stateKey struct {
	sale   string
	kind   Kind
	member string
}

func (s State) key() stateKey { return stateKey{s.Sale, s.Kind, s.Member} }

// name is the broadcast's name: a newer state of the same key replaces an
// older one still queued for sending.
func (s State) name() string { return s.Sale + "/" + string(s.Kind) + "/" + s.Member }

// newer reports whether s wins over old.
func (s State) newer(old State) bool {
	return s.Version > old.Version || s.Version == old.Version && s.Origin > old.Origin
}

// MaxStateBytes bounds one encoded state, so that a broadcast always fits
// in one UDP packet with room to share it (memberlist's UDPBufferSize is
// 1400 bytes): state stays small and never needs a TCP fallback.
const MaxStateBytes = 512

func (s State) encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxStateBytes {
		return nil, fmt.Errorf("gossip: state %s is %d bytes, above %d", s.name(), len(b), MaxStateBytes)
	}
	return b, nil
}

// broadcast is one state queued for gossip.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// Invalidates is only asked of broadcasts without the same name (the
// queue replaces those by name itself).
func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
