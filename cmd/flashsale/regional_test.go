package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"flashsale/internal/redistest"
	"flashsale/regional"
)

const testJWTSecret = "cmd-test-secret-cmd-test-secret-0123456789"

// TestRegionalRole runs `flashsale regional -config file` through run():
// it comes up ready on the static grant, sells, and shuts down cleanly
// when its context ends (as on SIGTERM).
func TestRegionalRole(t *testing.T) {
	rs := redistest.Start(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.key"), []byte(testJWTSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	cfg := `
preset: dev
region: eu
listen: 127.0.0.1:0
redis: ` + rs.Addr + `
regions: {us: "http://127.0.0.1:1"}
identity: {hs256SecretFile: jwt.key}
sales:
  - {id: phone, total: 10, ceiling: 2, startsAt: "` + start + `", reservationTTL: 1m}
`
	path := filepath.Join(dir, "eu.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	line, cancel, done := startRole(t, []string{"regional", "-config", path})
	defer cancel()
	if !strings.Contains(line, "ready=true") || !strings.Contains(line, "identity=jwt") {
		t.Fatalf("startup line %q: want ready=true identity=jwt", line)
	}
	addr := field(line, "http")
	base := "http://" + addr

	buy := func(user, req string) int {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": user, "home_region": "eu", "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(testJWTSecret))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := http.NewRequest("POST", base+"/v1/flash-sale/buy", strings.NewReader(`{"itemId":"phone","requestId":"`+req+`"}`))
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	got := []int{buy("a", "1"), buy("b", "2"), buy("c", "3")}
	// Both units are held by unpaid reservations: not sold out (they may
	// come back), so a 503 all_reserved, not a 410.
	if got[0] != 201 || got[1] != 201 || got[2] != 503 {
		t.Fatalf("buys answered %v, want 201 201 503 (ceiling 2, both held)", got)
	}
	resp, err := http.Get(base + "/v1/flash-sale/status?itemId=phone")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ State, Region string }
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Region != "eu" || st.State != "all_reserved" {
		t.Fatalf("status %+v", st)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestRegionalRoleBadConfig: configuration mistakes stop the role before
// it starts, with an error naming the bad value.
func TestRegionalRoleBadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok.yaml", "region: eu\nidentity: {insecureDev: true}\n")
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"regional", "-config", write("typo.yaml", "regoin: eu\n")}, nil, "regoin"},
		{[]string{"regional", "-config", filepath.Join(dir, "missing.yaml")}, nil, "missing.yaml"},
		{[]string{"regional", "-config", ok, "-region", "EU!"}, nil, `Region "EU!"`},
		{[]string{"regional", "-config", ok, "-listen", "nowhere"}, nil, `ListenAddr "nowhere"`},
		{[]string{"regional", "-config", ok}, map[string]string{envRegion: "Bad Region"}, `Region "Bad Region"`},
		{[]string{"regional", "-config", ok}, map[string]string{"FLASHSALE_ALLOW_WEAK_DURABILITY": "maybe"}, `"maybe"`},
		{[]string{"regional", "-region", "eu"}, nil, "no key"},
		{[]string{"regional", "stray"}, nil, "unexpected arguments"},
		{[]string{"seller"}, nil, `unknown role "seller"`},
		{nil, nil, "no role given"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		err := run(context.Background(), tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want an error naming %s", tc.args, tc.env, err, tc.want)
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}

// TestRegionalExampleConfig: the example file shipped next to the binary
// parses with every key known.
func TestRegionalExampleConfig(t *testing.T) {
	b, err := os.ReadFile("regional.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := regional.ParseFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Region != "eu" || len(f.Sales) != 1 || f.Sales[0].Ceiling == nil || f.Identity.Ed25519PublicKeyFile == "" {
		t.Fatalf("example parsed to %+v", f)
	}
}

// startRole runs `flashsale <args>` through run() and returns its startup
// line (the first line starting with the role's name), a cancel that acts
// as SIGTERM, and the channel run's error arrives on.
func startRole(t *testing.T, args []string) (line string, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, args, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), args[0]+" ") {
			line = sc.Text()
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if line == "" {
		cancel()
		t.Fatalf("no startup line; run returned %v", <-errc)
	}
	return line, cancel, errc
}

// TestRegionalClockOffset: -clock-offset moves the clock the seller reads.
// A sale opening in 30 minutes is not started for a seller on the true
// clock, and open for one whose clock runs an hour ahead, which also dates
// the reservation's expiry from its own clock.
func TestRegionalClockOffset(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	cfg := `
preset: dev
region: eu
listen: 127.0.0.1:0
identity: {insecureDev: true}
sales:
  - {id: phone, total: 10, ceiling: 2, startsAt: "` + start + `", reservationTTL: 1m}
`
	path := filepath.Join(dir, "eu.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	buy := func(offset string) (int, string) {
		rs := redistest.Start(t)
		args := []string{"regional", "-config", path, "-redis", rs.Addr}
		if offset != "" {
			args = append(args, "-clock-offset", offset)
		}
		line, cancel, done := startRole(t, args)
		defer func() { cancel(); <-done }()
		resp, err := http.Post("http://"+field(line, "http")+"/v1/flash-sale/buy", "application/json",
			strings.NewReader(`{"itemId":"phone","userId":"u1","requestId":"r1"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Code      string    `json:"code"`
			ExpiresAt time.Time `json:"expiresAt"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode == http.StatusCreated {
			exp := body.ExpiresAt
			// An hour ahead plus the 1 minute TTL.
			if d := time.Until(exp); d < 59*time.Minute || d > 62*time.Minute {
				t.Errorf("offset %s: reservation expires in %v, want about 1h1m", offset, d)
			}
		}
		return resp.StatusCode, body.Code
	}
	if st, code := buy(""); st != http.StatusTooEarly || code != "not_started" {
		t.Fatalf("true clock: buy answered %d %s, want 425 not_started", st, code)
	}
	if st, code := buy("1h"); st != http.StatusCreated {
		t.Fatalf("clock an hour ahead: buy answered %d %s, want 201", st, code)
	}
	if err := run(context.Background(), []string{"regional", "-config", path, "-clock-offset", "soon"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "clock-offset") {
		t.Fatalf("a bad -clock-offset: got %v, want an error naming the flag", err)
	}
}
