// Package pgtest starts a real PostgreSQL server for tests: initdb into a
// fresh directory with trust auth, postgres on a free loopback port with its
// socket in that directory, one database created, everything stopped and
// removed when the test ends. It never mocks PostgreSQL.
//
// PostgreSQL refuses to run as root, so when the test runs as root the
// server runs as the unprivileged `postgres` user the Debian package creates.
package pgtest

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
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint is the command that installs the PostgreSQL binaries.
const InstallHint = "apt-get update && apt-get install -y postgresql (or run scripts/deps.sh as root)"

// Database is the name of the database Start creates.
const Database = "flashsale_test"

// Server is one postgres child process owned by a test.
type Server struct {
	DSN  string // postgres://postgres@127.0.0.1:port/flashsale_test?sslmode=disable
	Port int
	Dir  string // holds data/, the socket and postgres.log

	t    testing.TB
	bin  string
	cred *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs initdb and postgres for t, creates the test database and
// registers the shutdown. It fails the test (with the install command) if
// the binaries are missing.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := launch(t.Cleanup, t)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// launch does Start's work; cleanups go to cleanup, so a server can also
// outlive one test (RunShared).
func launch(cleanup func(func()), t testing.TB) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	s := &Server{t: t, bin: bin}
	// Our own directory under the system temp dir rather than t.TempDir():
	// the postgres user must be able to reach it, and t.TempDir's parents
	// are private to root.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	s.Dir = dir
	cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			return nil, err
		}
		s.cred = cred
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: chown %s: %w", dir, err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgtest: chmod %s: %w", dir, err)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.Port = port
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, Database)
	cleanup(s.stop)
	if err := s.start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.createDatabase(ctx, Database); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) createDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port))
	if err != nil {
		return fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return nil
}

func (s *Server) start() error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: log file: %w", err)
	}
	defer logf.Close()
	// fsync off: a test's data only has to survive a process crash, which
	// the OS page cache covers; a machine crash is out of scope.
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.Dir, "data"),
		"-p", strconv.Itoa(s.Port), "-h", "127.0.0.1", "-k", s.Dir,
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50",
		"-c", "shared_buffers=16MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	// Output goes to a file: a child left on our pipes hangs the parent.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if err := waitReady(s.Port, done); err != nil {
		s.signal(syscall.SIGQUIT)
		return fmt.Errorf("pgtest: postgres on port %d: %w\nlog:\n%s", s.Port, err, tail(filepath.Join(s.Dir, "postgres.log")))
	}
	return nil
}

// signal sends sig to the postmaster and waits for it to exit.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Kill stops the server as a crash would ("immediate" shutdown: no
// checkpoint, the next start runs crash recovery). Open connections break.
func (s *Server) Kill() { s.signal(syscall.SIGQUIT) }

// Restart starts the server again on the same port and data directory
// (after Kill, or kills it first); it fails the test if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Server) stop() { s.signal(syscall.SIGINT) }

func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		// The highest version sorts last only up to 9.x vs 1x; prefer the
		// longest-then-greatest name so 16 beats 9.6.
		best := matches[0]
		for _, m := range matches[1:] {
			if len(m) > len(best) || (len(m) == len(best) && m > best) {
				best = m
			}
		}
		return filepath.Dir(best), nil
	}
	return "", errors.New("pgtest: PostgreSQL binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install them with `" + InstallHint + "`")
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and postgres refuses root; the `postgres` user is missing (%w): install the server with `%s`", err, InstallHint)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func waitReady(port int, exited <-chan struct{}) error {
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=1", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-exited:
			return errors.New("postgres exited at start")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s: %w", err)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
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
