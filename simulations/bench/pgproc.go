package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PG is a PostgreSQL server the bench starts for itself: initdb into a
// fresh directory, postgres on a free loopback port, one database. It
// follows internal/pgtest (test-only, so not importable here) but keeps
// fsync on: the hot-row baseline must pay for durability as Redis does with
// appendfsync always.
//
// PostgreSQL refuses to run as root, so as root it runs as the `postgres`
// user the Debian package creates.
type PG struct {
	DSN string
	Dir string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPG runs initdb and postgres and creates database "bench".
func StartPG(ctx context.Context) (*PG, error) {
	bin, err := pgBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-pg-")
	if err != nil {
		return nil, fmt.Errorf("postgres: temp dir: %w", err)
	}
	p := &PG{Dir: dir}
	ok := false
	defer func() {
		if !ok {
			_ = p.Close()
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("postgres: running as root and the postgres user is missing: %w (apt-get install -y postgresql)", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return nil, fmt.Errorf("postgres: chown %s: %w", dir, err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("postgres: chmod %s: %w", dir, err)
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postgres: initdb: %w\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("postgres: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("postgres: log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"),
		"-p", strconv.Itoa(port), "-h", "127.0.0.1", "-k", dir,
		"-c", "max_connections=100", "-c", "shared_buffers=32MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	// Output to a file: a child left on our pipes hangs the parent.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("postgres: start: %w", err)
	}
	p.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	p.cmd = cmd
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=1", port)
	deadline := time.Now().Add(30 * time.Second)
	var conn *pgx.Conn
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err = pgx.Connect(cctx, admin)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("postgres exited at start: %s", tailFile(filepath.Join(dir, "postgres.log")))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("postgres not ready after 30s: %w", err)
		}
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE bench"); err != nil {
		return nil, fmt.Errorf("postgres: create database: %w", err)
	}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/bench?sslmode=disable", port)
	ok = true
	return p, nil
}

// Close stops the server (fast shutdown) and removes its directory. Safe
// to call twice or on nil.
func (p *PG) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if p.Dir != "" {
		_ = os.RemoveAll(p.Dir)
		p.Dir = ""
	}
	return nil
}

func pgBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best := ""
	for _, m := range matches {
		if len(m) > len(best) || (len(m) == len(best) && m > best) {
			best = m
		}
	}
	if best == "" {
		return "", errors.New("postgres: initdb and postgres not found on PATH or in /usr/lib/postgresql/*/bin: apt-get install -y postgresql (make deps)")
	}
	return filepath.Dir(best), nil
}

func tailFile(path string) string {
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
