package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDevRoleStartsAndCleansUp runs `flashsale dev` through run() on free
// ports: it prints the endpoint table and the lines to try, and when its
// context ends (Ctrl-C) it stops every redis-server it started and removes
// its data dir.
func TestDevRoleStartsAndCleansUp(t *testing.T) {
	before := redisServers(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "-http-port", "0", "-grpc-addr", "127.0.0.1:0", "-etcd-addr", "127.0.0.1:0",
			"-sellers", "1", "-demo-total", "30"}, pw)
		pw.Close()
	}()
	var out strings.Builder
	var dataDir string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if f := strings.Fields(line); len(f) == 3 && f[0] == "data" && f[1] == "dir" {
			dataDir = f[2]
		}
		if strings.Contains(line, "Ctrl-C stops everything") {
			break
		}
	}
	for _, want := range []string{"coordinator gRPC", "region us sellers", "region ap redis", "flashctl status demo", "curl -s -X POST"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("dev output lacks %q:\n%s", want, out.String())
		}
	}
	if dataDir == "" {
		t.Fatalf("no data dir printed:\n%s", out.String())
	}
	if n := redisServers(t) - before; n != 3 {
		t.Fatalf("%d redis-server processes started for 3 regions", n)
	}
	cancel() // Ctrl-C
	go io.Copy(io.Discard, pr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dev did not stop within 60s of its context ending")
	}
	if n := redisServers(t); n != before {
		t.Fatalf("%d redis-server processes left running (was %d)", n, before)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s still there: %v", dataDir, err)
	}
}

// redisServers counts the redis-server processes that are children of this
// test binary, from /proc (no pgrep needed).
func redisServers(t *testing.T) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	me, n := strconv.Itoa(os.Getpid()), 0
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process is gone
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if s[open+1:end] == "redis-server" && len(fields) > 1 && fields[1] == me {
			n++
		}
	}
	return n
}
