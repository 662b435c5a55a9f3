// Package redisproc runs a redis-server child process on loopback with AOF
// and appendfsync always: for `flashsale dev`, the benchmarks and (through
// internal/redistest) the tests. It never daemonizes, so the parent owns the
// child and stops it on Close.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/childproc"
)

// ErrNotInstalled means redis-server is not on PATH.
var ErrNotInstalled = errors.New("redis-server not found on PATH: install it with `apt-get install -y redis-server` (make test and make run do it as root)")

// Options says where and how to run the server.
type Options struct {
	Dir  string   // data dir (AOF, log); required
	Port int      // 0 picks a free port
	Args []string // extra redis-server arguments, e.g. "--appendfsync", "everysec"
}

// Proc is one redis-server child process.
type Proc struct {
	Addr string // 127.0.0.1:port
	Dir  string

	opts  Options
	child childproc.Child
}

// Start launches redis-server and waits until it answers PING.
func Start(ctx context.Context, opts Options) (*Proc, error) {
	if opts.Dir == "" {
		return nil, errors.New("redisproc: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	// A free port picked here can be taken by another process before the
	// server binds it: with no port asked for, try a few.
	tries := 1
	if opts.Port == 0 {
		tries = 3
	}
	var err error
	for range tries {
		o := opts
		if o.Port == 0 {
			if o.Port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		p := &Proc{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)), Dir: o.Dir, opts: o}
		if err = p.start(ctx); err == nil {
			return p, nil
		}
	}
	return nil, err
}

func (p *Proc) start(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return ErrNotInstalled
	}
	args := append([]string{
		"--port", strconv.Itoa(p.opts.Port),
		"--bind", "127.0.0.1",
		"--dir", p.Dir,
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", filepath.Join(p.Dir, "redis.log"),
	}, p.opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = nil, nil // it writes its own log file
	done, err := p.child.Start(cmd)
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	if err := waitReady(ctx, p.Addr, 10*time.Second, done); err != nil {
		p.Kill()
		return fmt.Errorf("redis-server on %s: %w (log: %s)", p.Addr, err, childproc.Tail(filepath.Join(p.Dir, "redis.log")))
	}
	return nil
}

// Kill sends SIGKILL, as a crash would: nothing is flushed beyond what
// appendfsync always already wrote.
func (p *Proc) Kill() {
	if p != nil {
		p.child.Stop(syscall.SIGKILL, time.Minute)
	}
}

// Pause stops the server with SIGSTOP: it keeps its connections but
// answers nothing, as a stalled host or a long fsync would, until Resume.
func (p *Proc) Pause() error { return p.child.Signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (p *Proc) Resume() error { return p.child.Signal(syscall.SIGCONT) }

// Restart kills the server and starts it again on the same port and data
// dir, so it reloads its AOF.
func (p *Proc) Restart(ctx context.Context) error {
	p.Kill()
	return p.start(ctx)
}

// Close stops the server gracefully (SIGTERM, then SIGKILL after 5 s). Safe
// to call twice or on nil.
func (p *Proc) Close() error {
	if p != nil {
		_ = p.Resume() // a paused server cannot act on SIGTERM
		p.child.Stop(syscall.SIGTERM, 5*time.Second)
	}
	return nil
}

func waitReady(ctx context.Context, addr string, within time.Duration, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := c.Ping(pctx).Err()
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited at start")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) { return childproc.FreePort() }
