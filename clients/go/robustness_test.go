package samplerd_test

// Hostile and broken peers: a replica that stops reading, one that accepts connections and never speaks, a server
// that answers out of order, a message the server refuses at stream level, and Close with steps in flight. Each
// test bounds its wait generously: a step that hangs would never return at all.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"samplerd.dev/samplerd"
	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// hang is how long a test waits for something that only a hang would not finish.
const hang = 60 * time.Second

// waitAll runs f(0..n-1) concurrently and fails t when they have not all returned within hang.
func waitAll(t *testing.T, n int, f func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); f(i) }(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hang):
		t.Fatalf("%d concurrent calls still blocked after %v", n, hang)
	}
}

// fakeSampler serves samplerd.v1.Sampler in process with sample as its Sample handler.
func fakeSampler(t *testing.T, sample func(pb.Sampler_SampleServer) error, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterSamplerServer(srv, &fakeService{sample: sample})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type fakeService struct {
	pb.UnimplementedSamplerServer
	sample func(pb.Sampler_SampleServer) error
}

func (f *fakeService) Sample(stream pb.Sampler_SampleServer) error { return f.sample(stream) }

func TestAStepWhoseWriteAPeerNeverReadsTimesOutAndFailsOver(t *testing.T) {
	// 64 KiB flow-control windows and a handler that never reads: a 4 MB step blocks in its write.
	stalled := fakeSampler(t, func(stream pb.Sampler_SampleServer) error {
		<-stream.Context().Done()
		return nil
	}, grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	healthy := startServer(t, nil)
	c := newClient(t, []string{stalled, healthy.Address()}, samplerd.Options{Timeout: time.Second, FailoverTimeout: 5 * time.Second})
	errs := make([]error, 3)
	waitAll(t, len(errs), func(i int) {
		logits := make([]float32, 1000000)
		logits[i] = 9
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		r, err := c.Session(samplerd.SessionOptions{SequenceID: fmt.Sprint("stall-", i), Seed: 1}).Step(ctx, samplerd.F32(logits), nil)
		if err == nil && r.Token != int32(i) {
			err = fmt.Errorf("token %d, want %d", r.Token, i)
		}
		errs[i] = err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	if c.ActiveEndpoint() != healthy.Address() || c.Failovers() < 1 {
		t.Fatalf("active %s after %d failovers, want %s", c.ActiveEndpoint(), c.Failovers(), healthy.Address())
	}
}

func TestOpeningAStreamOnAnEndpointThatNeverSpeaksTimesOutAndFailsOver(t *testing.T) {
	// Accepts TCP connections and never answers the HTTP/2 handshake (as a SIGSTOPped replica does).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var held sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			held.Lock()
			conns = append(conns, conn)
			held.Unlock()
		}
	}()
	t.Cleanup(func() {
		held.Lock()
		defer held.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	healthy := startServer(t, nil)
	c := newClient(t, []string{lis.Addr().String(), healthy.Address()}, samplerd.Options{Timeout: time.Second, FailoverTimeout: 5 * time.Second})
	logits := make([]float32, 1000)
	logits[3] = 9
	// A context shorter than gRPC's 5 s connect timeout: the step must not wait that out on the silent endpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	r, err := c.Session(samplerd.SessionOptions{SequenceID: "silent", Seed: 1}).Step(ctx, samplerd.F32(logits), nil)
	if err != nil || r.Token != 3 {
		t.Fatalf("step: %+v, %v", r, err)
	}
	if c.ActiveEndpoint() != healthy.Address() {
		t.Fatalf("active %s, want %s", c.ActiveEndpoint(), healthy.Address())
	}
}

func TestAStringThatIsNotUTF8FailsLocallyAndIsNotRetried(t *testing.T) {
	s := startServer(t, nil)
	// A retried step would spin for an hour.
	c := newClient(t, []string{s.Address()}, samplerd.Options{Timeout: time.Second, FailoverTimeout: time.Hour})
	logits := make([]float32, 100)
	logits[5] = 9
	errs := make([]error, 4)
	waitAll(t, len(errs), func(i int) {
		var o samplerd.SessionOptions
		switch i {
		case 0:
			o = samplerd.SessionOptions{SequenceID: "seq-\xff\xfe", Seed: 1}
		case 1:
			o = samplerd.SessionOptions{SequenceID: "bad-profile", Profile: "entropix\xc3", Seed: 1}
		default:
			o = samplerd.SessionOptions{SequenceID: fmt.Sprint("ok-", i), Seed: 1}
		}
		session := c.Session(o)
		for step := 0; step < 3; step++ {
			if _, errs[i] = session.Step(context.Background(), samplerd.F32(logits), nil); errs[i] != nil {
				return
			}
		}
	})
	for i := 0; i < 2; i++ {
		if !errors.Is(errs[i], samplerd.ErrInvalidArgument) || errors.Is(errs[i], samplerd.ErrUnavailable) ||
			!strings.Contains(errs[i].Error(), "UTF-8") {
			t.Errorf("session %d: %v, want ErrInvalidArgument naming UTF-8", i, errs[i])
		}
	}
	for i := 2; i < 4; i++ {
		if errs[i] != nil {
			t.Errorf("session %d (valid): %v", i, errs[i])
		}
	}
	if c.Failovers() != 0 {
		t.Fatalf("%d failovers", c.Failovers())
	}
}

func TestCloseFailsTheStepsInFlightAtOnce(t *testing.T) {
	s := startServer(t, nil)
	// Steps that kept retrying after Close would spin for an hour.
	c, err := samplerd.NewClient([]string{s.Address()}, samplerd.Options{FailoverTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, 1000)
	logits[3] = 1
	var answered int64
	errs := make([]error, 4)
	go func() {
		for atomic.LoadInt64(&answered) < 20 {
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
	}()
	waitAll(t, len(errs), func(i int) {
		session := c.Session(samplerd.SessionOptions{SequenceID: fmt.Sprint("close-", i), Seed: 1})
		for {
			if _, errs[i] = session.Step(context.Background(), samplerd.F32(logits), nil); errs[i] != nil {
				return
			}
			atomic.AddInt64(&answered, 1)
		}
	})
	for i, err := range errs {
		if !errors.Is(err, samplerd.ErrClosed) {
			t.Errorf("goroutine %d: %v, want ErrClosed", i, err)
		}
	}
	waitAll(t, 1, func(int) {
		_, err = c.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(logits), nil)
	})
	if !errors.Is(err, samplerd.ErrClosed) || !errors.Is(err, samplerd.ErrUnavailable) {
		t.Fatalf("a step after Close: %v, want ErrClosed (an ErrUnavailable)", err)
	}
}

// silentShmSocket listens on a SOCK_SEQPACKET socket and, per connection, answers the first `answers` requests
// with a registered region, then reads nothing more and never answers.
func silentShmSocket(t *testing.T, answers int) string {
	t.Helper()
	path := socketDir(t) + "/shm.sock"
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fds := []int{fd}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		unix.Shutdown(fd, unix.SHUT_RDWR)
		for _, f := range fds {
			unix.Close(f)
		}
	})
	go func() {
		for {
			conn, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			mu.Lock()
			fds = append(fds, conn)
			mu.Unlock()
			buf, oob := make([]byte, 4096), make([]byte, 1024)
			for i := 0; i < answers; i++ {
				if _, _, _, _, err := unix.Recvmsg(conn, buf, oob, 0); err != nil {
					break
				}
				wire, _ := proto.Marshal(&pb.ShmControlResponse{Session: "s", Region: "r"})
				unix.Sendmsg(conn, wire, nil, nil, unix.MSG_NOSIGNAL)
			}
		}
	}()
	return path
}

func TestShmControlSocketThatNeverAnswersFallsBackToBytes(t *testing.T) {
	socket := silentShmSocket(t, 0)
	s := startServer(t, []string{"unix:" + socketDir(t) + "/grpc.sock"})
	var c *samplerd.Client
	waitAll(t, 1, func(int) {
		var err error
		if c, err = samplerd.NewClient([]string{s.Address()}, samplerd.Options{Timeout: time.Second,
			Shm: &samplerd.ShmOptions{Socket: socket}}); err != nil {
			t.Error(err)
		}
	})
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	if err := c.ShmStatus(); !errors.Is(err, samplerd.ErrShmUnavailable) {
		t.Fatalf("ShmStatus %v, want ErrShmUnavailable", err)
	}
	logits := make([]float32, 100)
	logits[7] = 9
	if r, err := c.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(logits), nil); err != nil || r.Token != 7 {
		t.Fatalf("step as bytes: %+v, %v", r, err)
	}

	// A plane whose server answered the register and then stops answering: the exchange times out and the plane
	// closes.
	plane, err := samplerd.ConnectShmWithTimeout(silentShmSocket(t, 1), 4096, "", "", 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Close()
	waitAll(t, 1, func(int) { err = plane.Unregister() })
	if !errors.Is(err, samplerd.ErrShmUnavailable) || plane.Alive() {
		t.Fatalf("Unregister on a silent socket: %v (alive %v), want ErrShmUnavailable and a closed plane", err, plane.Alive())
	}
}

func TestABatchWithAMismatchedAnswerAdvancesNoSession(t *testing.T) {
	// Answers every step with its own token, but swaps the last two results of a request.
	address := fakeSampler(t, func(stream pb.Sampler_SampleServer) error {
		for {
			req, err := stream.Recv()
			if err != nil {
				return nil
			}
			resp := &pb.SampleResponse{}
			for i, st := range req.Steps {
				resp.Results = append(resp.Results, &pb.StepResult{SequenceId: st.SequenceId, Step: st.Step, Token: int32(i), Seed: 1})
			}
			if n := len(resp.Results); n >= 2 {
				resp.Results[n-2], resp.Results[n-1] = resp.Results[n-1], resp.Results[n-2]
			}
			if err := stream.Send(resp); err != nil {
				return nil
			}
		}
	})
	c := newClient(t, []string{address}, samplerd.Options{})
	var items []samplerd.BatchItem
	for k := 0; k < 3; k++ {
		items = append(items, samplerd.BatchItem{Session: c.Session(samplerd.SessionOptions{SequenceID: fmt.Sprint("s", k), Seed: 1}),
			Logits: samplerd.F32(make([]float32, 10))})
	}
	results, err := c.SampleBatch(context.Background(), items)
	if !errors.Is(err, samplerd.ErrProtocol) || results != nil {
		t.Fatalf("SampleBatch: %v, %v; want ErrProtocol", results, err)
	}
	for _, it := range items {
		if it.Session.StepIndex() != 0 || len(it.Session.RecentTokens()) != 0 {
			t.Errorf("%s advanced to step %d (recent %v) without its caller seeing the token", it.Session.SequenceID(),
				it.Session.StepIndex(), it.Session.RecentTokens())
		}
	}
}

func TestAMessageTheServerRefusesFailsOnlyItsOwnStep(t *testing.T) {
	// A batch of 3 steps is over the server's --max_steps_per_request: samplerd answers the requests before it,
	// ends the shared stream with RESOURCE_EXHAUSTED and runs nothing after it, so the steps of other sessions
	// queued behind it are sent again on a fresh stream. (A message over --max_message_bytes is refused by gRPC
	// as it arrives, which can lose the answers ahead of it: the local size check below keeps it off the stream.)
	s := startServer(t, nil, "--max_steps_per_request", "2")
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	var answered int64
	stop := make(chan struct{})
	victimErrs := make([]error, 3)
	var big []error
	waitAll(t, len(victimErrs)+1, func(i int) {
		if i == len(victimErrs) {
			defer close(stop)
			for atomic.LoadInt64(&answered) < 10 {
				time.Sleep(5 * time.Millisecond)
			}
			logits := samplerd.F32(make([]float32, 1000))
			for k := 0; k < 3; k++ {
				var items []samplerd.BatchItem
				for j := 0; j < 3; j++ {
					session := c.Session(samplerd.SessionOptions{SequenceID: fmt.Sprint("batch-", k, "-", j), Seed: 1})
					items = append(items, samplerd.BatchItem{Session: session, Logits: logits})
				}
				_, err := c.SampleBatch(context.Background(), items)
				big = append(big, err)
				time.Sleep(50 * time.Millisecond)
			}
			return
		}
		session := c.Session(samplerd.SessionOptions{SequenceID: fmt.Sprint("victim-", i), Seed: 1})
		logits := make([]float32, 1000)
		logits[i] = 9
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := session.Step(context.Background(), samplerd.F32(logits), nil)
			if err == nil && r.Token != int32(i) {
				err = fmt.Errorf("token %d, want %d", r.Token, i)
			}
			if err != nil {
				victimErrs[i] = err
				return
			}
			atomic.AddInt64(&answered, 1)
		}
	})
	for i, err := range victimErrs {
		if err != nil {
			t.Errorf("victim %d: %v", i, err)
		}
	}
	for k, err := range big {
		var be *samplerd.BatchError
		if !errors.As(err, &be) || len(be.Errors) != 3 {
			t.Errorf("batch %d: %v, want a BatchError of 3 steps", k, err)
			continue
		}
		for _, se := range be.Errors {
			if se == nil || se.Code != codes.ResourceExhausted {
				t.Errorf("batch %d: step error %v, want RESOURCE_EXHAUSTED", k, se)
			}
		}
	}

	// With the client's limit at the server's, the large step fails locally, naming its size and the limit.
	local := newClient(t, []string{s.Address()}, samplerd.Options{MaxMessageBytes: 1 << 20})
	_, err := local.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 400000)), nil)
	if !errors.Is(err, samplerd.ErrInvalidArgument) || !strings.Contains(err.Error(), "1048576") {
		t.Fatalf("a step over MaxMessageBytes: %v, want ErrInvalidArgument naming the limit", err)
	}
}
