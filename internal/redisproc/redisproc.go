// Package redisproc runs a redis-server child process on loopback with AOF
// and appendfsync always: for `flashsale dev`, the benchmarks and (through
// internal/redistest) the tests. StartHA runs a primary, its replicas and
// three redis-sentinel processes the same way. It never daemonizes, so the
// parent owns the children and stops them on Close; a supervised child
// that crashes is started again.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"flashsale/internal/childproc"
)

// ErrNotInstalled means redis-server is not on PATH.
var ErrNotInstalled = errors.New("redis-server not found on PATH: install it with `apt-get install -y redis-server` (make test and make run do it as root)")

// ErrSentinelNotInstalled means redis-sentinel is not on PATH.
var ErrSentinelNotInstalled = errors.New("redis-sentinel not found on PATH: install it with `apt-get install -y redis-sentinel` (make test and make run do it as root)")

// Options says where and how to run the server.
type Options struct {
	Dir  string   // data dir (AOF, log); required
	Port int      // 0 picks a free port
	Args []string // extra redis-server arguments, e.g. "--appendfsync", "everysec"
	// StartArgs, if set, adds arguments computed at every start and
	// restart (a restarted replica asks Sentinel whom to follow).
	StartArgs func() []string
	// Sentinel runs redis-sentinel on Conf (written to Dir/sentinel.conf
	// at the first start; Sentinel rewrites it as it learns) instead of a
	// data server.
	Sentinel bool
	Conf     string
	// Supervise starts the server again, on the same port and dir, when it
	// exits without Close: what a process manager does for a crashed
	// server. Kill then simulates a crash the supervisor repairs.
	Supervise bool
	// RestartDelay is the supervisor's first pause before a restart (0:
	// 100 ms). A replicated node waits for Sentinel to fail over first: a
	// primary restarted at once, from an AOF fsynced every second, would
	// come back without its last writes and its replicas would copy it,
	// losing writes they had acknowledged to WAIT.
	RestartDelay time.Duration
}

// Proc is one redis-server (or redis-sentinel) child process.
type Proc struct {
	Addr string // 127.0.0.1:port
	Dir  string

	opts     Options
	child    childproc.Child
	restarts atomic.Int64

	mu   sync.Mutex
	stop context.CancelFunc // ends the supervisor
	wg   sync.WaitGroup
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
			if o.Supervise {
				p.supervise()
			}
			return p, nil
		}
	}
	return nil, err
}

func (p *Proc) logFile() string {
	if p.opts.Sentinel {
		return filepath.Join(p.Dir, "sentinel.log")
	}
	return filepath.Join(p.Dir, "redis.log")
}

func (p *Proc) command() (*exec.Cmd, error) {
	common := []string{
		"--port", strconv.Itoa(p.opts.Port),
		"--bind", "127.0.0.1",
		"--dir", p.Dir,
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", p.logFile(),
	}
	var extra []string
	if p.opts.StartArgs != nil {
		extra = p.opts.StartArgs()
	}
	if p.opts.Sentinel {
		bin, err := exec.LookPath("redis-sentinel")
		if err != nil {
			return nil, ErrSentinelNotInstalled
		}
		conf := filepath.Join(p.Dir, "sentinel.conf")
		if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(conf, []byte(p.opts.Conf), 0o600); err != nil {
				return nil, fmt.Errorf("sentinel config: %w", err)
			}
		}
		args := append(append([]string{conf}, common...), p.opts.Args...)
		return exec.Command(bin, append(args, extra...)...), nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	// A replica syncs at once (the default waits 5 s for more replicas).
	args := append(common, "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--repl-diskless-sync-delay", "0")
	args = append(append(args, p.opts.Args...), extra...)
	return exec.Command(bin, args...), nil
}

func (p *Proc) start(ctx context.Context) error {
	cmd, err := p.command()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = nil, nil // it writes its own log file
	done, err := p.child.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	if err := waitReady(ctx, p.Addr, 10*time.Second, done); err != nil {
		p.child.Stop(syscall.SIGKILL, time.Minute)
		return fmt.Errorf("%s on %s: %w (log: %s)", filepath.Base(cmd.Path), p.Addr, err, childproc.Tail(p.logFile()))
	}
	return nil
}

// supervise starts the server again whenever it exits before Close, after
// a pause (RestartDelay) that doubles, up to 2 s or RestartDelay, while
// restarts fail.
func (p *Proc) supervise() {
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.stop = cancel
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.child.Exited():
			}
			first := p.opts.RestartDelay
			if first <= 0 {
				first = 100 * time.Millisecond
			}
			for pause := first; ; pause = min(2*pause, max(first, 2*time.Second)) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
				if err := p.start(ctx); err == nil {
					p.restarts.Add(1)
					break
				}
			}
		}
	}()
}

// Restarts counts the supervisor's restarts after a crash.
func (p *Proc) Restarts() int64 { return p.restarts.Load() }

// Kill sends SIGKILL, as a crash would: nothing is flushed beyond what
// appendfsync always already wrote. A supervised server is started again
// by its supervisor.
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
// dir, so it reloads its AOF. A supervised server is started by its
// supervisor; Restart waits until it answers.
func (p *Proc) Restart(ctx context.Context) error {
	p.Kill()
	if p.opts.Supervise {
		return waitReady(ctx, p.Addr, 20*time.Second, nil)
	}
	return p.start(ctx)
}

// Close stops the server gracefully (SIGTERM, then SIGKILL after 5 s), and
// its supervisor first. Safe to call twice or on nil.
func (p *Proc) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	stop := p.stop
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
	p.wg.Wait()    // a restart under way ends (its child killed) before the stop below
	_ = p.Resume() // a paused server cannot act on SIGTERM
	p.child.Stop(syscall.SIGTERM, 5*time.Second)
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
