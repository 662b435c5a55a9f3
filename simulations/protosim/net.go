package protosim

import (
	"math/rand/v2"

	"flashsale/quota"
	"flashsale/quota/layout"
)

type msgKind int

const (
	// mView: etcd -> agent, a watch event on the allocation or the answer
	// to a read (Get); both carry the region's view of etcd.
	mView msgKind = iota
	// mGet: agent -> etcd, a read of the region's view.
	mGet
	// mReport: agent -> etcd, a fenced put of the region's report (also the
	// release ack).
	mReport
	// mReportEvent: etcd -> coordinator, a watch event on a report.
	mReportEvent
)

// view is what etcd tells a region agent about its region.
type view struct {
	Rev      int64 // etcd revision of the allocation read
	Granted  int64
	Released int64
	Pending  *quota.ReleaseRequest // this region's pending release, if any
	Delta    int64                 // grant increment of the write that made a watch event (0 on reads)
	Report   quota.Report          // the region's last report etcd holds
	// ReportReleaseID is the release that report names: it ran already,
	// and the report's ReleasedLocal counts it.
	ReportReleaseID string
	ReportRev       int64 // etcd revision of that report
	GetID           int64 // the read this answers; 0 for watch events
	Fence           int64 // the agent term that asked the read
}

type msg struct {
	at     int64 // step at which it is delivered
	seq    int64 // send order, for a stable sort before shuffling
	kind   msgKind
	region string
	coord  int // mReportEvent: the coordinator instance watching
	view   view
	report layout.RegionReport
	modRev int64 // mReportEvent: etcd revision of the report write
	getID  int64
	fence  int64
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
	for range copies {
		n.seq++
		m.seq = n.seq
		m.at = step + 1 + n.rng.Int64N(n.maxDelay)
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
