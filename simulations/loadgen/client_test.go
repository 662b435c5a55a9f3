package loadgen

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
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
