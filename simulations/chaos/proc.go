package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"flashsale/internal/childproc"
)

// proc is one flashsale child process, started again with the same
// arguments after a kill.
type proc struct {
	name  string
	bin   string
	args  []string
	env   []string
	log   string
	child childproc.Child
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "---- start %s %v\n", time.Now().Format(time.RFC3339Nano), p.args)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f // never our pipes: a child left on them hangs the parent
	_, err = p.child.Start(cmd)
	f.Close() // the child holds its own descriptor
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	return nil
}

// kill is kill -9: nothing is flushed, no lease is given back.
func (p *proc) kill() { p.child.Stop(syscall.SIGKILL, time.Minute) }

// stop ends the process gracefully (SIGTERM), then by force.
func (p *proc) stop() { p.child.Stop(syscall.SIGTERM, 5*time.Second) }

// pause stops the process with SIGSTOP (a stalled host) until resume.
func (p *proc) pause() error { return p.child.Signal(syscall.SIGSTOP) }

func (p *proc) resume() error { return p.child.Signal(syscall.SIGCONT) }
