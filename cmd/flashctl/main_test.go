package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"flashsale/coordinator"
	"flashsale/internal/etcdtest"
	"flashsale/internal/redistest"
)

const token = "admin-s3cret"

// startCoordinator runs a real coordinator on a real embedded etcd.
func startCoordinator(t *testing.T) string {
	t.Helper()
	e := etcdtest.Start(t)
	cfg := coordinator.DevConfig()
	cfg.Token = token
	c, err := coordinator.New(cfg, etcdtest.Client(t, e), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for !c.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("coordinator never became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c.Addr()
}

// ctl runs one real flashctl command line and returns its stdout and error.
func ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), err
}

// mustCtl runs flashctl with the connection flags conn and fails the test
// on an error, returning the output.
func mustCtl(t *testing.T, conn []string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, err := ctl(t, append(conn, args...)...)
		if err != nil {
			t.Fatalf("flashctl %v: %v\n%s", args, err, out)
		}
		return out
	}
}

func TestSaleLifecycleAndErrors(t *testing.T) {
	addr := startCoordinator(t)
	conn := []string{"--addr", addr, "--token", token}
	must := mustCtl(t, conn)

	out := must("sale", "create", "--id", "phone", "--total", "1000", "--regions", "us=2,eu,ap", "--starts-at", "+1s", "--duration", "1h")
	if !strings.Contains(out, "phone") || !strings.Contains(out, "us=2,eu,ap") {
		t.Fatalf("create output lacks the sale: %s", out)
	}

	// From a YAML file, with an unknown field: the error names it.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("id: x\ntotal: 5\ncolour: red\nregions: [{name: us}]\n"), 0o644)
	if _, err := ctl(t, append(conn, "sale", "create", "-f", bad)...); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown field in file: err = %v, want it named", err)
	}
	good := filepath.Join(t.TempDir(), "tv.yaml")
	os.WriteFile(good, []byte("id: tv\ntotal: 50\nstartsAt: +1h\nregions: [{name: us}, {name: eu, weight: 3}]\n"), 0o644)
	must("sale", "create", "-f", good)

	var list struct {
		Sales []struct {
			ID    string `json:"id"`
			Total string `json:"total"`
		} `json:"sales"`
	}
	if err := json.Unmarshal([]byte(must("sale", "list", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Sales) != 2 {
		t.Fatalf("sale list = %+v, want phone and tv", list.Sales)
	}

	// The initial split happens around the opening: status shows it, with
	// net grants summing to at most the total.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			Totals struct {
				Net string `json:"net"`
			} `json:"totals"`
		}
		if err := json.Unmarshal([]byte(must("status", "phone", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		if net, _ := strconv.ParseInt(st.Totals.Net, 10, 64); net > 0 {
			if net > 1000 {
				t.Fatalf("net %d above the total 1000", net)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no initial split within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	table := must("status", "phone")
	for _, want := range []string{"REGION", "us", "eu", "ap", "total"} {
		if !strings.Contains(table, want) {
			t.Fatalf("status table lacks %q:\n%s", want, table)
		}
	}

	// A move of more than the total is refused, not clipped.
	if _, err := ctl(t, append(conn, "move", "phone", "--from", "us", "--to", "eu", "--units", "5000", "--wait", "0")...); err == nil {
		t.Fatal("move of 5000 of 1000 units was accepted")
	}
	out = must("move", "phone", "--from", "us", "--to", "eu", "--units", "10", "--wait", "0")
	if !strings.Contains(out, "release") || !strings.Contains(out, "eu") {
		t.Fatalf("move output lacks the release step: %s", out)
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown sale", append(conn, "status", "nope"), "sale list"},
		{"missing argument", append(conn, "status"), "needs 1 argument"},
		{"bad output", append(conn, "sale", "list", "-o", "xml"), "use table or json"},
		{"no id", append(conn, "sale", "create", "--total", "5", "--regions", "us"), "sale id is required"},
		{"bad start", append(conn, "sale", "create", "--id", "a", "--total", "5", "--regions", "us", "--starts-at", "noon"), "RFC3339"},
		{"bad weight", append(conn, "sale", "create", "--id", "a", "--total", "5", "--regions", "us=-1"), "positive integer"},
		{"zero total", append(conn, "sale", "create", "--id", "a", "--total", "0", "--regions", "us"), "total"},
		{"move without units", append(conn, "move", "phone", "--from", "us", "--to", "eu"), "--units"},
		{"wrong token", []string{"--addr", addr, "--token", "wrong", "sale", "list"}, "--token"},
		{"unreachable", []string{"--addr", "127.0.0.1:" + freePort(t), "--timeout", "2s", "sale", "list"}, "make run"},
		{"not ready", append(conn, "readiness"), "not ready"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := ctl(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q (out %q)", err, c.want, out)
			}
			if strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestTokenVerifies(t *testing.T) {
	out, err := ctl(t, "token", "--user", "alice", "--region", "eu", "--secret", "k")
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(strings.TrimSpace(out), claims, func(*jwt.Token) (any, error) { return []byte("k"), nil }); err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if claims["sub"] != "alice" || claims["home_region"] != "eu" {
		t.Fatalf("claims = %v", claims)
	}
	if _, err := ctl(t, "token", "--user", "alice", "--secret", "k"); err == nil {
		t.Fatal("token without --region accepted")
	}
}

func freePort(t *testing.T) string { return strconv.Itoa(redistest.FreePort(t)) }
