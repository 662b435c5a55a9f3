package protosim

import (
	"math/rand/v2"

	"flashsale/quota/layout"
	"flashsale/regional/agent"
)

type msgKind int

const (
	// mGet: agent -> etcd, a read of everything (agent.Loaded).
	mGet msgKind = iota
	// mLoaded: etcd -> agent, the read's answer.
	mLoaded
	// mPut: agent -> etcd, a fenced report write (agent.PutReport).
	mPut
	// mPutAnswer: etcd -> agent, whether the write's compare held.
	mPutAnswer
	// mReportEvent: etcd -> coordinator, a watch event on a report.
	mReportEvent
)

type msg struct {
	at     int64 // step at which it is delivered
	seq    int64 // send order
	kind   msgKind
	region string
	agent  int // mGet, mLoaded, mPut, mPutAnswer: the agent process
	coord  int // mReportEvent: the coordinator instance watching
	getID  int64
	rev    int64        // mLoaded: the read's revision
	loaded agent.Loaded // mLoaded
	act    agent.Action // mPut, mPutAnswer
	fenced bool         // mPutAnswer: the compare failed
	report layout.RegionReport
	modRev int64 // mReportEvent: etcd revision of the report write
	gone   bool  // mReportEvent: the report was deleted (lease expiry)
}

// network delivers messages after a random delay, and until healed drops
// some and duplicates others; independent delays reorder them. A region that
// is cut off neither sends nor receives.
type network struct {
	rng      *rand.Rand
	stats    *Stats
	queue    []msg
	seq      int64
	drop     float64
	dup      float64
	maxDelay int64
	cut      map[string]bool
}

func newNetwork(rng *rand.Rand, stats *Stats) *network {
	return &network{rng: rng, stats: stats, drop: 0.1, dup: 0.1, maxDelay: 5, cut: map[string]bool{}}
}

func (n *network) heal() {
	n.drop, n.dup, n.maxDelay = 0, 0, 2
	clear(n.cut)
}

func (n *network) send(step int64, m msg) {
	n.stats.Messages++
	if n.cut[m.region] || n.rng.Float64() < n.drop {
		n.stats.Dropped++
		return
	}
	copies := 1
	if n.rng.Float64() < n.dup {
		n.stats.Duplicated++
		copies = 2
	}
	for i := range copies {
		n.seq++
		m.seq = n.seq
		delay := n.maxDelay
		if i == 1 && m.kind == mPut {
			delay *= 4 // a client's retry of a write lands late, over newer ones
		}
		m.at = step + 1 + n.rng.Int64N(delay)
		n.queue = append(n.queue, m)
	}
}

// due removes and returns the messages to deliver at step, in random order.
// A message to or from a region cut off meanwhile is lost.
func (n *network) due(step int64) []msg {
	var out []msg
	keep := n.queue[:0]
	for _, m := range n.queue {
		switch {
		case m.at > step:
			keep = append(keep, m)
		case n.cut[m.region]:
			n.stats.Dropped++
		default:
			out = append(out, m)
		}
	}
	clear(n.queue[len(keep):])
	n.queue = keep
	n.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
