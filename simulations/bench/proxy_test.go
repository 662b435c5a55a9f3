package bench

import (
	"bufio"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestDelayProxyForwardsBothWaysAndCloses(t *testing.T) {
	before := runtime.NumGoroutine()
	px, err := NewDelayProxy(echoServer(t), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", px.Addr)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	// Pipelined lines come back whole and in order.
	var want strings.Builder
	for i := range 100 {
		line := strings.Repeat(string(rune('a'+i%26)), 1+i*37%500) + "\n"
		want.WriteString(line)
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	var got strings.Builder
	for range 100 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		got.WriteString(line)
	}
	if got.String() != want.String() {
		t.Fatal("echo through the proxy differs from what was sent")
	}
	// Close cuts the open connection and leaves no goroutine behind.
	if err := px.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("connection still open after Close")
	}
	c.Close()
	if err := px.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	var nilProxy *DelayProxy
	_ = nilProxy.Close()
	for range 100 {
		if runtime.NumGoroutine() <= before+1 { // +1: the echo server's accept loop
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
}

func TestDelayProxyRejectsNegativeDelay(t *testing.T) {
	if _, err := NewDelayProxy("127.0.0.1:1", -time.Millisecond); err == nil {
		t.Fatal("negative delay accepted")
	}
}
