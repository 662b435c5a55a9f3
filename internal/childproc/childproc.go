// Package childproc holds what the launchers of real servers (redisproc,
// pgproc) share: a child process's start and stop, picking a free loopback
// port, and reading the tail of a child's log for an error message.
package childproc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Tail returns the last 15 lines of the file at path, or why it cannot.
func Tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// Child is one running child process: started once, stopped at most once.
// A Child can be started again after it stopped (a restart).
type Child struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts cmd and returns a channel closed when it exits. Its output
// must go to files: a child left on our pipes hangs the parent.
func (c *Child) Start(cmd *exec.Cmd) (exited <-chan struct{}, err error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	return done, nil
}

// Exited returns the channel closed when the last started child exits
// (nil before any start).
func (c *Child) Exited() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// Signal sends sig to the running child (nothing if none runs).
func (c *Child) Signal(sig os.Signal) error {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	return cmd.Process.Signal(sig)
}

// Stop sends sig and waits for the exit; after grace it kills the child
// (and its process group, when it has its own) with SIGKILL. Stopping a
// child that is not running does nothing.
func (c *Child) Stop(sig os.Signal, grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	if a := cmd.SysProcAttr; a != nil && a.Setpgid {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	} else {
		_ = cmd.Process.Kill()
	}
	<-done
}

// Children counts the running processes named comm (e.g. "redis-server")
// whose parent is this process, from /proc: how tests prove that nothing
// they started is left behind.
func Children(comm string) (int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, fmt.Errorf("children: %w", err)
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
		// A zombie (state Z) has exited: only its exit status is left.
		if s[open+1:end] == comm && len(fields) > 1 && fields[0] != "Z" && fields[1] == me {
			n++
		}
	}
	return n, nil
}
