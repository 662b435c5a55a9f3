package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// rejoinEvery is how often a member alone in its cluster tries its seeds
// again (a seller that started before its agent, or a healed partition).
const rejoinEvery = 2 * time.Second

// retransmitMult is the least retransmit multiplier of states (see Start).
const retransmitMult = 6

// Member is a live member of the region as its metadata describes it.
type Member struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Role    Role   `json:"role"`
	Version string `json:"version,omitempty"`
	Load    int64  `json:"load"` // the member's requests in flight
}

// meta is a member's node metadata (memberlist.MetaMaxSize: 512 bytes).
type meta struct {
	Role    Role   `json:"r"`
	Version string `json:"v,omitempty"`
	Load    int64  `json:"l"`
}

// Node is one member of a region's cluster. Start it with Start; Close it.
type Node struct {
	cfg Config
	ml  *memberlist.Memberlist
	q   *memberlist.TransmitLimitedQueue

	mu      sync.Mutex
	states  map[stateKey]State
	members map[string]Member // live, from memberlist's events
	meta    meta

	sellers atomic.Int64 // live sellers, this node included if it is one

	stop chan struct{}
	done chan struct{}
}

// delegate is the Node seen by memberlist, which calls it from its own
// goroutines (kept off Node's exported method set).
type delegate Node

// Start creates the member, joins cfg.Seeds (retrying every 2 s in the
// background while it is alone) and returns it.
func Start(cfg Config) (*Node, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, states: map[stateKey]State{}, members: map[string]Member{}, meta: meta{Role: cfg.Role, Version: cfg.Version},
		stop: make(chan struct{}), done: make(chan struct{})}
	if n.cfg.Name == "" {
		// memberlist needs the name before it binds; a free port is
		// known only after. The bind port (when given) keeps names stable.
		n.cfg.Name = string(cfg.Role) + "-" + strconv.Itoa(cfg.BindPort)
		if cfg.BindPort == 0 {
			n.cfg.Name = fmt.Sprintf("%s-%d", cfg.Role, time.Now().UnixNano())
		}
	}
	mc, err := n.cfg.memberlistConfig((*delegate)(n))
	if err != nil {
		return nil, err
	}
	// Each member passes a new state on retransmitMult x log10(members)
	// times. memberlist's own (2 on the local preset, 4 on LAN) left one
	// member in about twenty without a state among ten members on a loaded
	// machine, until the next push-pull; states are tiny, so send more.
	n.q = &memberlist.TransmitLimitedQueue{RetransmitMult: max(mc.RetransmitMult, retransmitMult), NumNodes: func() int {
		n.mu.Lock()
		defer n.mu.Unlock()
		return max(1, len(n.members))
	}}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start %s: %w", n.cfg.Name, err)
	}
	n.ml = ml
	if len(cfg.Seeds) > 0 {
		if _, err := ml.Join(cfg.Seeds); err != nil {
			n.cfg.Logger.Warn("gossip: no seed answered; retrying in the background", "seeds", cfg.Seeds, "err", err)
		}
	}
	go n.rejoin()
	return n, nil
}

// rejoin joins the seeds again while this member is alone.
func (n *Node) rejoin() {
	defer close(n.done)
	t := time.NewTicker(rejoinEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			if seeds := n.seedList(); len(seeds) > 0 && n.ml.NumMembers() <= 1 {
				_, _ = n.ml.Join(seeds)
			}
		}
	}
}

func (n *Node) seedList() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.cfg.Seeds)
}

// AddSeed adds a member to join (the address the region's agent registers
// in etcd, layout.RegionInfo.Gossip) and joins it now unless it is this
// member or already a seed; the rejoin loop keeps it.
func (n *Node) AddSeed(addr string) error {
	self := n.Addr()
	n.mu.Lock()
	if addr == "" || addr == self || slices.Contains(n.cfg.Seeds, addr) {
		n.mu.Unlock()
		return nil
	}
	n.cfg.Seeds = append(n.cfg.Seeds, addr)
	n.mu.Unlock()
	_, err := n.ml.Join([]string{addr})
	return err
}

// Close announces the departure (so the others drop this member at once
// rather than after the failure detector's timeout) and stops.
func (n *Node) Close() error {
	if !n.stopLoop() {
		return nil
	}
	if err := n.ml.Leave(time.Second); err != nil {
		// Best effort: a member that finds no one to tell (the last one
		// left) times out here; the others' failure detector covers it.
		n.cfg.Logger.Debug("gossip: leave not confirmed", "err", err)
	}
	return n.ml.Shutdown()
}

// Kill stops the member without a goodbye, as a crash would: the others
// learn of it from the failure detector (tests and the bench time it).
func (n *Node) Kill() error {
	if !n.stopLoop() {
		return nil
	}
	return n.ml.Shutdown()
}

// stopLoop stops the rejoin loop; false if the member was stopped before.
func (n *Node) stopLoop() bool {
	select {
	case <-n.stop:
		return false
	default:
	}
	close(n.stop)
	<-n.done
	return true
}

// Name is this member's name.
func (n *Node) Name() string { return n.cfg.Name }

// Addr is where this member gossips ("host:port"), for others' Seeds.
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Members lists the live members, by name.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Sellers is the number of live sellers in the region (at least 1 for a
// seller: itself).
func (n *Node) Sellers() int { return int(n.sellers.Load()) }

// memberEvent records a join, update (alive) or leave. memberlist calls
// its event delegate with its node lock held, so the membership is kept
// here from the events, never read back from memberlist.
func (n *Node) memberEvent(node *memberlist.Node, alive bool) {
	n.mu.Lock()
	if alive {
		var md meta
		_ = json.Unmarshal(node.Meta, &md) // a member without metadata has no role: not a seller
		n.members[node.Name] = Member{Name: node.Name, Addr: node.Address(), Role: md.Role, Version: md.Version, Load: md.Load}
	} else {
		delete(n.members, node.Name)
	}
	var k int64
	for _, m := range n.members {
		if m.Role == RoleSeller {
			k++
		}
	}
	n.mu.Unlock()
	if n.cfg.Role == RoleSeller {
		k = max(k, 1)
	}
	if n.sellers.Swap(k) != k && n.cfg.OnMembers != nil {
		n.cfg.OnMembers()
	}
}

// SetLoad updates the load in this member's metadata, spread with the
// next probe round (memberlist's UpdateNode).
func (n *Node) SetLoad(load int64) error {
	n.mu.Lock()
	n.meta.Load = load
	n.mu.Unlock()
	return n.ml.UpdateNode(time.Second)
}

// Publish offers a state this member learned. If it is newer than what
// the member holds for its key it is kept, handed to OnState and gossiped;
// otherwise it is dropped. It reports whether the state won.
func (n *Node) Publish(st State) (bool, error) {
	if st.Origin == "" {
		st.Origin = n.cfg.Name
	}
	msg, err := st.encode()
	if err != nil {
		return false, err
	}
	return n.merge(st, msg), nil
}

// Get returns the state held for (sale, kind, member).
func (n *Node) Get(sale string, kind Kind, member string) (State, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.states[stateKey{sale, kind, member}]
	return st, ok
}

// States returns every state held, of one sale and kind.
func (n *Node) States(sale string, kind Kind) []State {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []State
	for k, st := range n.states {
		if k.sale == sale && k.kind == kind {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Member < out[j].Member })
	return out
}

// demandBody is a KindDemand state's body.
type demandBody struct {
	N int64 `json:"n"`
}

// PublishDemand gossips this member's buy attempts for a sale since it
// started. The version is the publishing time, so a restarted member's
// new counts win over its old ones.
func (n *Node) PublishDemand(sale string, total int64) error {
	body, err := json.Marshal(demandBody{N: total})
	if err == nil {
		_, err = n.Publish(State{Sale: sale, Kind: KindDemand, Member: n.cfg.Name, Version: time.Now().UnixNano(), Body: body})
	}
	return err
}

// Demand is the region's buy attempts for a sale as gossiped: the sum of
// the live sellers' counts (the agent's demand meter reads it). A seller
// that left takes its count with it, so the sum can go down; the meter
// then starts afresh.
func (n *Node) Demand(_ context.Context, sale string) (int64, error) {
	live := map[string]bool{}
	for _, m := range n.Members() {
		live[m.Name] = m.Role == RoleSeller
	}
	var sum int64
	for _, st := range n.States(sale, KindDemand) {
		var b demandBody
		if live[st.Member] && json.Unmarshal(st.Body, &b) == nil {
			sum += b.N
		}
	}
	return sum, nil
}

// merge keeps st if it is newer than the state held for its key, and then
// gossips it on (epidemic spread: every member that learns something new
// passes it on, each a bounded number of times).
func (n *Node) merge(st State, msg []byte) bool {
	n.mu.Lock()
	old, ok := n.states[st.key()]
	if ok && !st.newer(old) {
		n.mu.Unlock()
		return false
	}
	n.states[st.key()] = st
	n.mu.Unlock()
	n.q.QueueBroadcast(&broadcast{name: st.name(), msg: msg})
	if n.cfg.OnState != nil {
		n.cfg.OnState(st)
	}
	return true
}

func (n *Node) receive(msg []byte) {
	var st State
	if err := json.Unmarshal(msg, &st); err != nil {
		n.cfg.Logger.Warn("gossip: undecodable state dropped", "err", err)
		return
	}
	n.merge(st, append([]byte(nil), msg...))
}

// memberlist.Delegate and memberlist.EventDelegate.

func (d *delegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	n.mu.Lock()
	b, _ := json.Marshal(n.meta)
	n.mu.Unlock()
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) { (*Node)(d).receive(b) }

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.q.GetBroadcasts(overhead, limit)
}

// LocalState is every state held, for a push-pull with another member
// (a member that joins late, or missed messages, gets them this way).
func (d *delegate) LocalState(bool) []byte {
	n := (*Node)(d)
	n.mu.Lock()
	all := make([]State, 0, len(n.states))
	for _, st := range n.states {
		all = append(all, st)
	}
	n.mu.Unlock()
	b, _ := json.Marshal(all)
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, _ bool) {
	n := (*Node)(d)
	var all []State
	if err := json.Unmarshal(buf, &all); err != nil {
		n.cfg.Logger.Warn("gossip: undecodable push-pull state dropped", "err", err)
		return
	}
	for _, st := range all {
		if msg, err := st.encode(); err == nil {
			n.merge(st, msg)
		}
	}
}

func (d *delegate) NotifyJoin(m *memberlist.Node)   { (*Node)(d).memberEvent(m, true) }
func (d *delegate) NotifyLeave(m *memberlist.Node)  { (*Node)(d).memberEvent(m, false) }
func (d *delegate) NotifyUpdate(m *memberlist.Node) { (*Node)(d).memberEvent(m, true) }
