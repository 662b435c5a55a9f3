package gossip

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"flashsale/internal/testwait"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// childEnv makes the test binary a lone member (TestMain) for the kill test.
const childEnv = "GOSSIP_TEST_CHILD"

func TestMain(m *testing.M) {
	if seeds := os.Getenv(childEnv); seeds != "" {
		n, err := Start(Config{Region: "eu", Role: RoleSeller, Preset: PresetLocal, Keys: [][]byte{testKey}, Seeds: []string{seeds}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(n.Name()) // the parent waits for this line
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	}
	// memberlist's Shutdown does not wait for a probe in flight: it ends
	// on its own timer, within one probe interval. Every other goroutine,
	// ours and memberlist's, must be gone.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// waitFor polls cond; the 30 s bound only guards against a hang (the
// failure detector on the local preset needs a few seconds).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, 30*time.Second, cond)
}

// recorder collects what OnState hands a member.
type recorder struct {
	mu   sync.Mutex
	seen []State
}

func (r *recorder) on(st State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, st)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func start(t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.Region == "" {
		cfg.Region = "eu"
	}
	if cfg.Role == "" {
		cfg.Role = RoleSeller
	}
	cfg.Preset = PresetLocal
	if cfg.Keys == nil && !cfg.Plaintext {
		cfg.Keys = [][]byte{testKey}
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func cluster(t *testing.T, size int, recs []*recorder) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range size {
		cfg := Config{Name: fmt.Sprint("s", i)}
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		if recs != nil {
			recs[i] = &recorder{}
			cfg.OnState = recs[i].on
		}
		nodes = append(nodes, start(t, cfg))
	}
	for _, n := range nodes {
		waitFor(t, n.Name()+" sees the cluster", func() bool { return len(n.Members()) == size })
	}
	return nodes
}

func stock(version int64, body string) State {
	return State{Sale: "s1", Kind: KindStock, Version: version, Body: json.RawMessage(body)}
}

// TestStateSpreadsNewestWins: a state published on one member reaches
// every member; an older one published later, anywhere, changes nothing;
// a newer one replaces it everywhere.
func TestStateSpreadsNewestWins(t *testing.T) {
	recs := make([]*recorder, 3)
	nodes := cluster(t, 3, recs)
	has := func(n *Node, v int64) bool {
		st, ok := n.Get("s1", KindStock, "")
		return ok && st.Version == v
	}
	if won, err := nodes[0].Publish(stock(10, `{"sold":1}`)); !won || err != nil {
		t.Fatalf("first publish: %v %v", won, err)
	}
	for _, n := range nodes {
		waitFor(t, n.Name()+" has v10", func() bool { return has(n, 10) })
	}
	if won, _ := nodes[2].Publish(stock(9, `{"sold":0}`)); won {
		t.Fatal("an older state won")
	}
	if won, _ := nodes[1].Publish(stock(12, `{"sold":3}`)); !won {
		t.Fatal("a newer state lost")
	}
	for _, n := range nodes {
		waitFor(t, n.Name()+" has v12", func() bool { return has(n, 12) })
	}
	// Same version: the larger origin wins, on every member alike.
	a, b := stock(20, `{"sold":5}`), stock(20, `{"sold":6}`)
	a.Origin, b.Origin = "a", "b"
	_, _ = nodes[0].Publish(b)
	_, _ = nodes[2].Publish(a)
	for _, n := range nodes {
		waitFor(t, n.Name()+" settles on origin b", func() bool {
			st, ok := n.Get("s1", KindStock, "")
			return ok && st.Version == 20 && st.Origin == "b"
		})
	}
	for i, r := range recs {
		r.mu.Lock()
		for _, st := range r.seen {
			if st.Version == 9 {
				t.Errorf("member %d was handed the stale state", i)
			}
		}
		r.mu.Unlock()
	}
}

// TestLateJoinerGetsState: a member that joins after the states were
// gossiped gets them by push-pull, per-member states included.
func TestLateJoinerGetsState(t *testing.T) {
	nodes := cluster(t, 2, nil)
	_, _ = nodes[0].Publish(stock(7, `{"sold":2}`))
	_, _ = nodes[1].Publish(State{Sale: "s1", Kind: KindDemand, Member: nodes[1].Name(), Version: 3, Body: json.RawMessage(`40`)})
	late := start(t, Config{Name: "late", Seeds: []string{nodes[1].Addr()}})
	waitFor(t, "late member has the stock", func() bool {
		st, ok := late.Get("s1", KindStock, "")
		return ok && st.Version == 7
	})
	waitFor(t, "late member has the demand", func() bool { return len(late.States("s1", KindDemand)) == 1 })
}

// TestMembershipAndLoad: roles and load travel in the metadata; an agent
// is a member but not a seller; a member that leaves is gone at once.
func TestMembershipAndLoad(t *testing.T) {
	agent := start(t, Config{Name: "agent", Role: RoleAgent, Version: "v1"})
	if agent.Sellers() != 0 {
		t.Fatalf("an agent alone counts %d sellers", agent.Sellers())
	}
	s1 := start(t, Config{Name: "s1", Seeds: []string{agent.Addr()}})
	s2, err := Start(Config{Name: "s2", Region: "eu", Role: RoleSeller, Preset: PresetLocal, Keys: [][]byte{testKey}, Seeds: []string{agent.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two sellers", func() bool { return agent.Sellers() == 2 && s1.Sellers() == 2 })
	if err := s1.SetLoad(42); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent sees s1's load", func() bool {
		for _, m := range agent.Members() {
			if m.Name == "s1" && m.Load == 42 && m.Role == RoleSeller {
				return true
			}
		}
		return false
	})
	roles := map[string]Role{}
	for _, m := range agent.Members() {
		roles[m.Name] = m.Role
		if m.Version == "" {
			t.Fatalf("member %s carries no build version", m.Name)
		}
	}
	if roles["agent"] != RoleAgent || roles["s2"] != RoleSeller {
		t.Fatalf("roles %v", roles)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "s2's departure", func() bool { return agent.Sellers() == 1 && s1.Sellers() == 1 })
}

// TestRefusedMembers: a member with another key, without encryption, or
// of another region cannot join.
func TestRefusedMembers(t *testing.T) {
	seed := start(t, Config{Name: "seed"})
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"wrong key", Config{Keys: [][]byte{[]byte("fedcba9876543210fedcba9876543210")}}},
		{"no key", Config{Plaintext: true}},
		{"other region", Config{Region: "us"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = "intruder"
			n := start(t, tc.cfg)
			if got, err := n.ml.Join([]string{seed.Addr()}); err == nil || got != 0 {
				t.Fatalf("joined %d members (err %v), want refused", got, err)
			}
			if len(seed.Members()) != 1 || len(n.Members()) != 1 {
				t.Fatalf("seed sees %v, intruder sees %v", seed.Members(), n.Members())
			}
		})
	}
	// Key rotation: first every member adds the new key as a secondary
	// (it still encrypts with the old one), then makes it primary. A
	// member at the first step talks to one not yet changed and to one at
	// the second.
	next := []byte("fedcba9876543210fedcba9876543210")
	both := start(t, Config{Name: "both", Keys: [][]byte{testKey, next}})
	if _, err := both.ml.Join([]string{seed.Addr()}); err != nil {
		t.Fatalf("a member with the new key as secondary: %v", err)
	}
	rotated := start(t, Config{Name: "rotated", Keys: [][]byte{next, testKey}})
	if _, err := rotated.ml.Join([]string{both.Addr()}); err != nil {
		t.Fatalf("a member encrypting with the new key: %v", err)
	}
	waitFor(t, "both joined", func() bool { return len(both.Members()) >= 2 })
}

// TestKillDetected: a seller in another process is killed (SIGKILL, no
// goodbye); the failure detector declares it dead and the seller count,
// on which each seller's share of the rate limits depends, falls back.
func TestKillDetected(t *testing.T) {
	s := start(t, Config{Name: "parent"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+s.Addr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 256)
	k, _ := out.Read(buf)
	child := strings.TrimSpace(string(buf[:k]))
	waitFor(t, "the child joined", func() bool { return s.Sellers() == 2 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the killed child is declared dead", func() bool { return s.Sellers() == 1 })
	for _, m := range s.Members() {
		if m.Name == child {
			t.Fatalf("%s still listed after its death", child)
		}
	}
}

// TestStateStaysSmall: a stock snapshot fits one packet with room to
// spare; a state above MaxStateBytes is refused, never sent.
func TestStateStaysSmall(t *testing.T) {
	body := `{"fence":123456789,"grantedSeen":1000000,"releasedLocal":999999,"sold":1000000,"reserved":1000000,"halted":true,"total":10000000,"othersSold":10000000,"othersReserved":10000000,"at":1765000000000}`
	st := stock(1765000000000000, body)
	st.Sale, st.Origin = strings.Repeat("x", 128), strings.Repeat("n", 64)
	b, err := st.encode()
	if err != nil {
		t.Fatalf("a full-size stock snapshot: %v", err)
	}
	if len(b) > MaxStateBytes {
		t.Fatalf("%d bytes", len(b))
	}
	big := stock(1, `"`+strings.Repeat("y", MaxStateBytes)+`"`)
	n := start(t, Config{Name: "solo"})
	if won, err := n.Publish(big); won || err == nil {
		t.Fatalf("an oversized state: won %v err %v", won, err)
	}
}

// TestConfigErrors: what is missing or wrong is said, all at once.
func TestConfigErrors(t *testing.T) {
	_, err := Start(Config{Role: "buyer", Preset: "wan", Keys: [][]byte{[]byte("short")}})
	if err == nil {
		t.Fatal("a bad config started")
	}
	for _, want := range []string{"Region is required", `Role "buyer"`, `Preset "wan"`, "key 0 is 5 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := Start(Config{Region: "eu", Role: RoleSeller}); err == nil || !strings.Contains(err.Error(), "keyring is required") {
		t.Fatalf("no keyring outside dev mode: %v", err)
	}
}

// TestAddSeed: a member started alone joins a cluster through a seed
// added later (as a seller learns its agent's gossip address from etcd);
// adding itself or a known seed is a no-op.
func TestAddSeed(t *testing.T) {
	a := start(t, Config{Name: "a"})
	b := start(t, Config{Name: "b"})
	if err := b.AddSeed(b.Addr()); err != nil {
		t.Fatal(err)
	}
	if len(b.Members()) != 1 {
		t.Fatalf("b joined itself: %v", b.Members())
	}
	if err := b.AddSeed(a.Addr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b joined through the added seed", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	if err := b.AddSeed(a.Addr()); err != nil || len(b.seedList()) != 1 {
		t.Fatalf("seeds %v after adding a twice (%v)", b.seedList(), err)
	}
}
