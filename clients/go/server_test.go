package samplerd_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"samplerd.dev/samplerd"
	"samplerd.dev/samplerd/internal/scripted"
)

// repo is the repository root: this file is clients/go/server_test.go.
func repo() string {
	_, file, _, _ := runtime.Caller(0)
	dir, err := filepath.EvalSymlinks(filepath.Dir(file)) // go.sh builds through a GOPATH link to this folder
	if err != nil {
		dir = filepath.Dir(file)
	}
	return filepath.Clean(filepath.Join(dir, "..", ".."))
}

// socketDir is a fresh directory for unix sockets, under /tmp and removed when t ends: a socket's path must fit in
// sun_path (107 bytes), which a long $TMPDIR (where t.TempDir lives) does not leave room for.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// goldenDir is $SAMPLERD_GOLDEN_DIR (scripts/test-clients.sh passes the build's setting), else tests/golden.
func goldenDir() string {
	if d := os.Getenv("SAMPLERD_GOLDEN_DIR"); d != "" {
		return d
	}
	return filepath.Join(repo(), "tests", "golden")
}

// samplerdBinary is $SAMPLERD_BIN, else build/service/samplerd; a missing binary fails the test (never skips).
func samplerdBinary(t testing.TB) string {
	bin := os.Getenv("SAMPLERD_BIN")
	if bin == "" {
		bin = filepath.Join(repo(), "build", "service", "samplerd")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("samplerd binary: %v (build it, or set $SAMPLERD_BIN)", err)
	}
	return bin
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is a live samplerd process; Addresses are the real listen addresses it printed.
type server struct {
	cmd       *exec.Cmd
	out       *lockedBuffer
	Addresses []string
	done      chan struct{}
}

var listeningRE = regexp.MustCompile(`samplerd listening on (\S+)`)

func startServer(t testing.TB, listen []string, extra ...string) *server {
	t.Helper()
	if len(listen) == 0 {
		listen = []string{"127.0.0.1:0"}
	}
	args := append([]string{"--log_level", "warn"}, extra...)
	for _, a := range listen {
		args = append(args, "--listen", a)
	}
	s := &server{cmd: exec.Command(samplerdBinary(t), args...), out: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.kill(syscall.SIGKILL) })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m := listeningRE.FindAllStringSubmatch(s.out.String(), -1)
		if len(m) >= len(listen) {
			for _, x := range m {
				s.Addresses = append(s.Addresses, x[1])
			}
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("samplerd exited: %s", s.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("samplerd did not start: %s", s.out.String())
	return nil
}

func (s *server) Address() string { return s.Addresses[0] }

// kill sends sig and waits for the exit; it returns the exit code (-1 when killed by a signal).
func (s *server) kill(sig syscall.Signal) int {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(sig)
		<-s.done
	}
	return s.cmd.ProcessState.ExitCode()
}

var shape = scripted.Shape{Vocab: 2048, Layers: 2, Heads: 4, KVBase: 8}

// generate runs steps of the scripted model through session; onStep runs before each step.
func generate(t *testing.T, session *samplerd.Session, steps int, onStep func(i int)) []int32 {
	t.Helper()
	var tokens []int32
	prev := int32(1)
	for i := 0; i < steps; i++ {
		if onStep != nil {
			onStep(i)
		}
		logits, att, ashape := scripted.StepInputs(shape, 7, int(session.StepIndex()), prev)
		a := samplerd.F32(att, ashape...)
		r, err := session.Step(context.Background(), samplerd.F32(logits), &a)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		prev = r.Token
		tokens = append(tokens, prev)
	}
	return tokens
}

func newClient(t *testing.T, targets []string, opts samplerd.Options) *samplerd.Client {
	t.Helper()
	c, err := samplerd.NewClient(targets, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
