package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"flashsale/internal/childproc"
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
// test binary.
func redisServers(t *testing.T) int {
	t.Helper()
	n, err := childproc.Children("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
