package loadgen

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// serveLoopback runs h on a loopback port for the test.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

var secret = []byte("0123456789abcdef0123456789abcdef")

// A try that times out is retried with the same requestId and the same
// token; the retry's answer is the attempt's.
func TestHTTPOpRetriesWithSameRequestID(t *testing.T) {
	var mu sync.Mutex
	var seen []buyBody
	var subs []string
	url := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in buyBody
		_ = json.NewDecoder(r.Body).Decode(&in)
		tok, err := jwt.Parse(r.Header.Get("Authorization")[len("Bearer "):], func(*jwt.Token) (any, error) { return secret, nil })
		mu.Lock()
		seen = append(seen, in)
		if err == nil {
			c := tok.Claims.(jwt.MapClaims)
			subs = append(subs, c["sub"].(string)+"@"+c["home_region"].(string))
		}
		first := len(seen) == 1
		mu.Unlock()
		if first {
			<-r.Context().Done() // never answers: the client must time out
			return
		}
		w.WriteHeader(http.StatusOK) // the reservation the lost try made
		_ = json.NewEncoder(w).Encode(map[string]string{"reservationId": "7"})
	}))
	signer, err := NewSigner(secret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": url}, Sale: "s1", Signer: signer, Timeout: 100 * time.Millisecond, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	res := op.Do(context.Background(), Attempt{Seq: 3, User: User{ID: "u3", Region: "eu"}, RequestID: "run-3"})
	if res.Outcome != OutcomeReserved || !res.Reserved || res.ReservationID != "7" {
		t.Fatalf("result %+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != seen[1] || seen[0] != (buyBody{ItemID: "s1", UserID: "u3", RequestID: "run-3"}) {
		t.Fatalf("tries sent %+v: want the same body twice", seen)
	}
	if len(subs) != 2 || subs[0] != "u3@eu" {
		t.Fatalf("token claims %v", subs)
	}
}

// A 307 to a loopback URL is followed with the body and token; one off
// loopback is not.
func TestHTTPOpRedirects(t *testing.T) {
	home := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in buyBody
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.RequestID == "" || r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": "bad_json"})
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"reservationId": "1"})
	}))
	away := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", home+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": "wrong_region"})
	}))
	offsite := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://10.1.2.3"+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	signer, _ := NewSigner(secret, time.Hour)
	for _, tc := range []struct {
		first, want string
	}{{away, OutcomeReserved}, {offsite, "redirect_off_loopback"}} {
		// Every attempt misrouted: the user's home is eu, the op starts at us.
		op, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": home, "us": tc.first}, Sale: "s1", Signer: signer,
			Timeout: 5 * time.Second, MisrouteFrac: 1})
		if err != nil {
			t.Fatal(err)
		}
		res := op.Do(context.Background(), Attempt{Seq: 1, User: User{ID: "u1", Region: "eu"}, RequestID: "r1"})
		op.Close()
		if res.Outcome != tc.want {
			t.Errorf("starting at %s: outcome %q, want %q", tc.first, res.Outcome, tc.want)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8080", "http://localhost", "https://[::1]:9", "http://127.3.4.5"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://10.0.0.1", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:80", "http://127.0.0.1.example.com"} {
		if err := CheckLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// scripted answers buys from a list of (status, body, Retry-After) in
// turn, the last one forever, and records the requestIds it was sent.
func scripted(t *testing.T, answers ...[3]string) (string, func() []string) {
	var mu sync.Mutex
	var ids []string
	url := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in buyBody
		_ = json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		ids = append(ids, in.RequestID)
		a := answers[min(len(ids), len(answers))-1]
		mu.Unlock()
		if a[2] != "" {
			w.Header().Set("Retry-After", a[2])
		}
		status := map[string]int{"201": 201, "410": 410, "503": 503}[a[0]]
		w.WriteHeader(status)
		_, _ = w.Write([]byte(a[1]))
	}))
	return url, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ids)
	}
}

// A retryable refusal is retried with the same requestId after its
// retryAfterMs (not its whole-second Retry-After); a final one is not;
// Retries and RetryFor bound the retries.
func TestHTTPOpHonoursRetryHints(t *testing.T) {
	pending := [3]string{"503", `{"code":"quota_pending","message":"m","retryAfterMs":30}`, "1"}
	reserved := [3]string{"201", `{"reservationId":"r9"}`, ""}
	do := func(t *testing.T, cfg HTTPConfig) Result {
		op, err := NewHTTPOp(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		return op.Do(context.Background(), Attempt{Seq: 1, User: User{ID: "u1", Region: "eu"}, RequestID: "run-1"})
	}
	cfg := func(url string, retries int, retryFor time.Duration) HTTPConfig {
		return HTTPConfig{Endpoints: map[string]string{"eu": url}, Sale: "s1", Timeout: time.Second, Retries: retries, RetryFor: retryFor}
	}
	t.Run("retryAfterMs", func(t *testing.T) {
		url, ids := scripted(t, pending, pending, reserved)
		start := time.Now()
		res := do(t, cfg(url, 20, 0))
		took := time.Since(start)
		if !res.Reserved || res.Retries != 2 || !slices.Equal(res.Answers, []string{"quota_pending", "quota_pending", "reserved"}) {
			t.Fatalf("result %+v", res)
		}
		// Two waits of 30 ms, not of Retry-After's 1 s.
		if took < 60*time.Millisecond || took > 900*time.Millisecond {
			t.Fatalf("took %v: want about 60 ms", took)
		}
		// The last try's latency holds neither the waits nor the tries before.
		if res.LastTry <= 0 || res.LastTry > took-60*time.Millisecond {
			t.Fatalf("last try %v of an attempt of %v: want it without the 60 ms of waits", res.LastTry, took)
		}
		if got := ids(); len(got) != 3 || got[0] != "run-1" || got[1] != "run-1" || got[2] != "run-1" {
			t.Fatalf("requestIds %v: want run-1 three times", got)
		}
	})
	t.Run("final answer", func(t *testing.T) {
		url, ids := scripted(t, [3]string{"410", `{"code":"sold_out","message":"m"}`, ""})
		if res := do(t, cfg(url, 20, 0)); res.Outcome != "sold_out" || res.Retries != 0 || len(ids()) != 1 {
			t.Fatalf("result %+v after %d tries", res, len(ids()))
		}
	})
	t.Run("retry bound", func(t *testing.T) {
		url, ids := scripted(t, pending)
		if res := do(t, cfg(url, 3, 0)); res.Outcome != "quota_pending" || res.Retries != 3 || len(ids()) != 4 {
			t.Fatalf("result %+v after %d tries", res, len(ids()))
		}
	})
	t.Run("time bound", func(t *testing.T) {
		url, ids := scripted(t, [3]string{"503", `{"code":"all_reserved","message":"m","retryAfterMs":9000}`, "9"})
		start := time.Now()
		if res := do(t, cfg(url, 20, time.Second)); res.Outcome != "all_reserved" || len(ids()) != 1 || time.Since(start) > 900*time.Millisecond {
			t.Fatalf("result %+v after %d tries in %v: a wait past RetryFor must not be taken", res, len(ids()), time.Since(start))
		}
	})
}

// Once a try was answered outcome_unknown (the seller sent it to Redis
// and lost the answer), no later refusal is the attempt's outcome: a
// retry shed before Redis (overloaded) or answered from memory says
// nothing of the unit the first try may hold. Only a reservation is
// final; anything else stays outcome_unknown (the goodput curve counted
// such buyers as told "overloaded" while Redis held their unit).
func TestHTTPOpOutcomeUnknownIsNotUndone(t *testing.T) {
	unknown := [3]string{"503", `{"code":"outcome_unknown","message":"m","retryAfterMs":5}`, "1"}
	overloaded := [3]string{"503", `{"code":"overloaded","message":"m","retryAfterMs":5}`, "1"}
	soldOut := [3]string{"410", `{"code":"sold_out","message":"m"}`, ""}
	reserved := [3]string{"201", `{"reservationId":"r9"}`, ""}
	for _, tc := range []struct {
		name    string
		answers [][3]string
		want    string
	}{
		{"then overloaded", [][3]string{unknown, overloaded}, "outcome_unknown"},
		{"then overloaded twice", [][3]string{unknown, overloaded, overloaded}, "outcome_unknown"},
		{"then sold out", [][3]string{unknown, soldOut}, "outcome_unknown"},
		{"then reserved", [][3]string{unknown, overloaded, reserved}, OutcomeReserved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, ids := scripted(t, tc.answers...)
			op, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": url}, Sale: "s1", Timeout: time.Second, Retries: len(tc.answers) - 1})
			if err != nil {
				t.Fatal(err)
			}
			defer op.Close()
			res := op.Do(context.Background(), Attempt{Seq: 1, User: User{ID: "u1", Region: "eu"}, RequestID: "run-1"})
			if res.Outcome != tc.want || len(ids()) != len(tc.answers) {
				t.Fatalf("result %+v after %d tries: want %s", res, len(ids()), tc.want)
			}
		})
	}
}

func TestRetryWait(t *testing.T) {
	for _, tc := range []struct {
		h    string // Retry-After
		ms   int64
		want time.Duration
	}{
		{"2", 250, 250 * time.Millisecond}, // the body's hint wins
		{"2", 0, 2 * time.Second},          // else the header
		{"", 0, 0},                         // neither: final
	} {
		if got := retryWait(tc.h, answer{RetryAfterMs: tc.ms}); got != tc.want {
			t.Errorf("retryWait(%v, %d) = %v, want %v", tc.h, tc.ms, got, tc.want)
		}
	}
}

// Connect leaves n connections open and idle: the server sees n of them,
// and a second Connect (or n buys at once) reuses them, opening none.
func TestHTTPOpConnectOpensAndKeepsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := 0
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				conns++
				mu.Unlock()
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	op, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": "http://" + ln.Addr().String()}, Sale: "s", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	opened := func() int {
		mu.Lock()
		defer mu.Unlock()
		return conns
	}
	if n, err := op.Connect(context.Background(), 50, 8); err != nil || n != 50 {
		t.Fatalf("connect: %d, %v; want 50", n, err)
	}
	if got := opened(); got != 50 {
		t.Fatalf("server saw %d connections, want 50", got)
	}
	if n, err := op.Connect(context.Background(), 50, 50); err != nil || n != 50 {
		t.Fatalf("second connect: %d, %v", n, err)
	}
	if got := opened(); got != 50 {
		t.Fatalf("server saw %d connections after a second connect, want the same 50 reused", got)
	}
}

// The generator speaks plain HTTP: an https endpoint is refused up front
// rather than failing every request.
func TestHTTPOpRefusesHTTPS(t *testing.T) {
	if _, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": "https://127.0.0.1:8443"}, Sale: "s", Timeout: time.Second}); err == nil {
		t.Fatal("an https endpoint was accepted")
	}
	if _, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": "http://127.0.0.1:8080"}, Sale: "s", Timeout: time.Second}); err != nil {
		t.Fatalf("plain http refused: %v", err)
	}
}

// Each closed-loop client keeps one connection of its own, as a buyer's
// browser does: whichever client asks, every request it makes arrives on
// the connection it first used, and no two clients share one. Attempts
// of no client (Client 0) share a pool.
func TestHTTPOpPinsEachClientToItsConnection(t *testing.T) {
	var mu sync.Mutex
	byUser := map[string]map[string]bool{} // userId -> remote addresses seen
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			UserID string `json:"userId"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		if byUser[in.UserID] == nil {
			byUser[in.UserID] = map[string]bool{}
		}
		byUser[in.UserID][r.RemoteAddr] = true
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"reservationId":"r"}`))
	})
	op, err := NewHTTPOp(HTTPConfig{Endpoints: map[string]string{"eu": serveLoopback(t, h)}, Sale: "s", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	// Clients 1..4 each buy as their own user, 5 times, interleaved so
	// that a shared pool would hand each a connection another used.
	for round := range 5 {
		for c := 1; c <= 4; c++ {
			a := Attempt{Seq: round, User: User{ID: "u" + strconv.Itoa(c), Region: "eu"}, RequestID: "r", Client: c}
			if res := op.Do(context.Background(), a); !res.Reserved {
				t.Fatalf("client %d: %+v", c, res)
			}
		}
	}
	owner := map[string]string{}
	for u, addrs := range byUser {
		if len(addrs) != 1 {
			t.Errorf("user %s (client %s) used %d connections, want its own one", u, u[1:], len(addrs))
		}
		for a := range addrs {
			if o, ok := owner[a]; ok {
				t.Errorf("connection %s used by both %s and %s", a, o, u)
			}
			owner[a] = u
		}
	}
	if len(byUser) != 4 {
		t.Fatalf("server saw %d users, want 4", len(byUser))
	}
	// Attempts of no client, in turn, share the pool's one connection.
	for i := range 2 {
		if res := op.Do(context.Background(), Attempt{Seq: i, User: User{ID: "open", Region: "eu"}, RequestID: "o" + strconv.Itoa(i)}); !res.Reserved {
			t.Fatalf("open arrival %d: %+v", i, res)
		}
	}
	if n := len(byUser["open"]); n != 1 {
		t.Errorf("attempts of no client in turn used %d connections, want the shared pool's one", n)
	}
}
