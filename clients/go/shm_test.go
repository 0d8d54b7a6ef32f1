package samplerd_test

// The shared-memory plane against a live samplerd with --shm_socket: a Client with Options.Shm answers byte for
// byte as one sending bytes (and really sends references), a hand-written slot ring does too, bad references
// get per-step INVALID_ARGUMENT naming the field, the client falls back to bytes (and says so) over TCP,
// without a socket and after samplerd restarted, and closing the client leaves no region on the server.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"samplerd.dev/samplerd"
	pb "samplerd.dev/samplerd/gen/samplerd/v1"
	"samplerd.dev/samplerd/internal/scripted"
)

type shmServer struct {
	*server
	dir     string
	socket  string // --shm_socket
	metrics string // host:port of /metrics
}

func startShmServer(t testing.TB, dir string, extra ...string) *shmServer {
	t.Helper()
	if dir == "" {
		dir = socketDir(t)
	}
	sock := filepath.Join(dir, "shm.sock")
	s := startServer(t, []string{"unix:" + filepath.Join(dir, "grpc.sock")},
		append([]string{"--shm_socket", sock, "--metrics_listen", "127.0.0.1:0"}, extra...)...)
	re := regexp.MustCompile(`samplerd metrics on (\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(s.out.String()); m != nil {
			return &shmServer{server: s, dir: dir, socket: sock, metrics: m[1]}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("samplerd printed no metrics address: %s", s.out.String())
	return nil
}

// metric is the value of an unlabelled series on /metrics.
func (s *shmServer) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s on /metrics:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMetric waits (the server drops a region when it sees the connection close) until name has value want.
func (s *shmServer) waitMetric(t *testing.T, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.metric(t, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, s.metric(t, name), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sentRefs counts the tensors a client sent as references and as bytes (a stream interceptor sees each request).
type sentRefs struct {
	mu          sync.Mutex
	refs, bytes int
}

func (c *sentRefs) dialOption() grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return &countingStream{ClientStream: s, counts: c}, err
	})
}

type countingStream struct {
	grpc.ClientStream
	counts *sentRefs
}

func (s *countingStream) SendMsg(m interface{}) error {
	if req, ok := m.(*pb.SampleRequest); ok {
		s.counts.mu.Lock()
		for _, st := range req.Steps {
			for _, ref := range []bool{st.LogitsRef != nil, st.AttentionRef != nil} {
				if ref {
					s.counts.refs++
				}
			}
			for _, inline := range []bool{st.Logits != nil, st.Attention != nil} {
				if inline {
					s.counts.bytes++
				}
			}
		}
		s.counts.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

func (c *sentRefs) get() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refs, c.bytes
}

// run drives three sequences for steps steps, float32 / float16 / bfloat16 in turn, in batches and single
// steps, and returns every result.
func run(t *testing.T, c *samplerd.Client, steps int) []*samplerd.StepResult {
	t.Helper()
	ctx := context.Background()
	sessions := make([]*samplerd.Session, 3)
	prev := []int32{1, 2, 3}
	for i := range sessions {
		sessions[i] = c.Session(samplerd.SessionOptions{SequenceID: "shm-" + strconv.Itoa(i), Seed: uint64(40 + i),
			TopLogprobs: 4})
	}
	encode := func(values []float32, shape []int64, t int) samplerd.Tensor {
		switch t % 3 {
		case 1:
			return samplerd.F16(scripted.F16Bits(values), shape...)
		case 2:
			return samplerd.BF16(scripted.BF16Bits(values), shape...)
		}
		return samplerd.F32(values, shape...)
	}
	var all []*samplerd.StepResult
	for step := 0; step < steps; step++ {
		items := make([]samplerd.BatchItem, len(sessions))
		for i, s := range sessions {
			logits, att, ashape := scripted.StepInputs(shape, uint32(i+1), step, prev[i])
			a := encode(att, ashape, step)
			items[i] = samplerd.BatchItem{Session: s, Logits: encode(logits, nil, step), Attention: &a}
		}
		var results []*samplerd.StepResult
		if step%2 == 0 {
			var err error
			if results, err = c.SampleBatch(ctx, items); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		} else {
			for _, it := range items {
				r, err := it.Session.Step(ctx, it.Logits, it.Attention)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				results = append(results, r)
			}
		}
		for i, r := range results {
			prev[i] = r.Token
			r.ServerMicros = 0
			all = append(all, r)
		}
	}
	return all
}

func sameResults(t *testing.T, got, want []*samplerd.StepResult) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := *got[i], *want[i]
		if !proto.Equal(g.Applied, w.Applied) || !proto.Equal(g.Metrics, w.Metrics) {
			t.Fatalf("result %d: applied/metrics %v %v, want %v %v", i, g.Applied, g.Metrics, w.Applied, w.Metrics)
		}
		g.Applied, g.Metrics, w.Applied, w.Metrics = nil, nil, nil, nil
		if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
			t.Fatalf("result %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestShmClientAnswersAsBytesAndLeavesNoRegion(t *testing.T) {
	s := startShmServer(t, "")
	target := s.Address()
	var counts sentRefs
	c, err := samplerd.NewClient([]string{target}, samplerd.Options{DialOptions: []grpc.DialOption{counts.dialOption()},
		Shm: &samplerd.ShmOptions{Socket: s.socket, Size: 1 << 20, Name: "go-test"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ShmStatus(); err != nil {
		t.Fatalf("ShmStatus = %v, want nil (the plane in use)", err)
	}
	if s.metric(t, "samplerd_shm_regions") != 1 || s.metric(t, "samplerd_shm_clients") != 1 {
		t.Fatalf("regions %v clients %v after connecting, want 1 and 1", s.metric(t, "samplerd_shm_regions"),
			s.metric(t, "samplerd_shm_clients"))
	}
	viaShm := run(t, c, 12)
	if refs, inline := counts.get(); refs != 12*3*2 || inline != 0 {
		t.Fatalf("sent %d tensors by reference and %d inline, want %d and 0", refs, inline, 12*3*2)
	}
	c.Close()
	s.waitMetric(t, "samplerd_shm_clients", 0)
	s.waitMetric(t, "samplerd_shm_regions", 0)
	s.waitMetric(t, "samplerd_shm_regions_mapped", 0)
	s.waitMetric(t, "samplerd_shm_mapped_bytes", 0)

	viaBytes := run(t, newClient(t, []string{target}, samplerd.Options{}), 12)
	sameResults(t, viaShm, viaBytes)
}

// A server with --auth_token_file registers a region only for a connection that presents a token: the Client's
// Token goes with it.
func TestShmClientWithATokenUsesThePlaneOfAServerThatRequiresOne(t *testing.T) {
	dir := socketDir(t)
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("go-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startShmServer(t, dir, "--auth_token_file", tokens)
	var counts sentRefs
	c, err := samplerd.NewClient([]string{s.Address()}, samplerd.Options{Token: "go-secret",
		DialOptions: []grpc.DialOption{counts.dialOption()},
		Shm:         &samplerd.ShmOptions{Socket: s.socket, Size: 1 << 20, Name: "go-token"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ShmStatus(); err != nil {
		t.Fatalf("ShmStatus = %v, want nil (the plane in use)", err)
	}
	run(t, c, 2)
	if refs, inline := counts.get(); refs == 0 || inline != 0 {
		t.Fatalf("sent %d tensors by reference and %d inline, want all by reference", refs, inline)
	}
	if _, err := samplerd.ConnectShm(s.socket, 4096, "no-token"); err == nil {
		t.Fatal("ConnectShm without a token registered a region on a server that requires one")
	} else if e := (*samplerd.ShmError)(nil); !errors.As(err, &e) || e.Code != codes.Unauthenticated {
		t.Fatalf("ConnectShm without a token: %v, want UNAUTHENTICATED", err)
	}
}

// A request whose tensors need more than a part of the region goes as bytes; the others still go by reference.
func TestShmClientSendsBytesForARequestTooLargeForItsPart(t *testing.T) {
	s := startShmServer(t, "")
	var counts sentRefs
	c := newClient(t, []string{s.Address()}, samplerd.Options{DialOptions: []grpc.DialOption{counts.dialOption()},
		Shm: &samplerd.ShmOptions{Socket: s.socket, Size: 64 << 10, Slots: 2}})
	small := c.Session(samplerd.SessionOptions{Seed: 1})
	large := c.Session(samplerd.SessionOptions{Seed: 1})
	if _, err := small.Step(context.Background(), samplerd.F32(make([]float32, 1000)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := large.Step(context.Background(), samplerd.F32(make([]float32, 9000)), nil); err != nil {
		t.Fatal(err)
	}
	if refs, inline := counts.get(); refs != 1 || inline != 1 {
		t.Fatalf("sent %d by reference, %d inline; want 1 and 1", refs, inline)
	}
}

func answer(t *testing.T, stub pb.SamplerClient, ctx context.Context, req *pb.SampleRequest) []byte {
	t.Helper()
	resp, err := stub.SampleOnce(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Results {
		r.ServerMicros = 0
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dialStub(t testing.TB, target string) pb.SamplerClient {
	t.Helper()
	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewSamplerClient(conn)
}

func TestShmSlotRingViewsAndReferenceTensorsAnswerAsBytes(t *testing.T) {
	s := startShmServer(t, "")
	plane, err := samplerd.ConnectShm(s.socket, 1<<20, "by-hand")
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Close()
	if len(plane.Session()) != 32 || len(plane.Region()) != 32 || plane.Size() != 1<<20 {
		t.Fatalf("session %q region %q size %d", plane.Session(), plane.Region(), plane.Size())
	}
	stub := dialStub(t, s.Address())
	ctx := plane.Context(context.Background())
	logits, att, ashape := scripted.StepInputs(shape, 9, 3, 17)

	// Written in place through a []float32 view of a slot: no copy besides the host's own write.
	ring, err := samplerd.NewShmSlotRing(plane, len(logits)*4)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Count() != (1<<20)/ring.SlotBytes() || ring.SlotBytes()%64 != 0 {
		t.Fatalf("%d slots of %d bytes", ring.Count(), ring.SlotBytes())
	}
	slot := ring.Next()
	copy(slot.F32(len(logits)), logits)
	attSlot := ring.Next()
	if attSlot.Offset != ring.SlotBytes() {
		t.Fatalf("second slot at %d, want %d", attSlot.Offset, ring.SlotBytes())
	}
	attRef, err := attSlot.Write(samplerd.F32(att, ashape...))
	if err != nil {
		t.Fatal(err)
	}
	byRef := &pb.SampleRequest{Steps: []*pb.Step{{SequenceId: "v", Seed: 3, TopLogprobs: 5,
		LogitsRef: slot.Ref(pb.DType_DTYPE_F32, int64(len(logits))), AttentionRef: attRef}}}
	inline := &pb.SampleRequest{Steps: []*pb.Step{{SequenceId: "v", Seed: 3, TopLogprobs: 5,
		Logits:    &pb.Tensor{Dtype: pb.DType_DTYPE_F32, Shape: []int64{int64(len(logits))}, Data: samplerd.F32(logits).Data},
		Attention: &pb.Tensor{Dtype: pb.DType_DTYPE_F32, Shape: ashape, Data: samplerd.F32(att).Data}}}}
	want := answer(t, stub, context.Background(), inline)
	if got := answer(t, stub, ctx, byRef); !bytes.Equal(got, want) {
		t.Fatal("a step referencing slot views answered differently from the same tensors as bytes")
	}

	// ReferenceTensors: a bfloat16 step and a malformed one (kept inline, so it fails the same way).
	bf := samplerd.BF16(scripted.BF16Bits(logits))
	req := &pb.SampleRequest{Steps: []*pb.Step{
		{SequenceId: "b", Seed: 5, Logits: &pb.Tensor{Dtype: bf.DType, Shape: bf.Shape, Data: bf.Data}},
		{SequenceId: "m", Seed: 5, Logits: &pb.Tensor{Dtype: pb.DType_DTYPE_F32, Shape: []int64{10}, Data: make([]byte, 39)}},
	}}
	refs, err := samplerd.ReferenceTensors(plane, 0, req)
	if err != nil {
		t.Fatal(err)
	}
	if refs.Steps[0].LogitsRef == nil || refs.Steps[0].Logits != nil || refs.Steps[1].Logits == nil ||
		refs.Steps[1].LogitsRef != nil || req.Steps[0].Logits == nil {
		t.Fatalf("references: %v (from %v)", refs, req)
	}
	if got := answer(t, stub, ctx, refs); !bytes.Equal(got, answer(t, stub, context.Background(), req)) {
		t.Fatal("ReferenceTensors' request answered differently from the original")
	}
	if _, err := samplerd.ReferenceTensors(plane, (1<<20)-64, req); err == nil {
		t.Fatal("ReferenceTensors past the region's end succeeded")
	}
}

func TestShmBadReferencesGetPerStepInvalidArgumentNamingTheField(t *testing.T) {
	s := startShmServer(t, "")
	plane, err := samplerd.ConnectShm(s.socket, 4096, "")
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Close()
	other, err := samplerd.ConnectShm(s.socket, 4096, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	stub := dialStub(t, s.Address())
	// The good step's logits are written, as every referenced range must be (docs/shm.md): zeros, uniform logits.
	for i := range plane.Data()[:400] {
		plane.Data()[i] = 0
	}
	good := &pb.Step{SequenceId: "good", Seed: 1, LogitsRef: plane.Ref(0, pb.DType_DTYPE_F32, 100)}
	cases := []struct {
		name  string
		ref   *pb.TensorRef
		field string
		says  string
	}{
		{"out of bounds", plane.Ref(2048, pb.DType_DTYPE_F32, 1000), "logits_ref.offset", "past the end"},
		{"misaligned", plane.Ref(2, pb.DType_DTYPE_F32, 10), "logits_ref.offset", ""},
		{"overflowing shape", plane.Ref(0, pb.DType_DTYPE_F32, 1<<40, 1<<40), "logits_ref.shape", ""},
		{"unknown region", &pb.TensorRef{Region: strings.Repeat("ab", 16), Dtype: pb.DType_DTYPE_F32, Shape: []int64{10}},
			"logits_ref.region", ""},
		{"another client's region", other.Ref(0, pb.DType_DTYPE_F32, 10), "logits_ref.region", "another client"},
	}
	for _, tc := range cases {
		resp, err := stub.SampleOnce(plane.Context(context.Background()), &pb.SampleRequest{Steps: []*pb.Step{
			{SequenceId: "bad", LogitsRef: tc.ref}, good}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		bad, ok := resp.Results[0].Error, resp.Results[1]
		if bad == nil || codes.Code(bad.Code) != codes.InvalidArgument || bad.Field != tc.field ||
			!strings.Contains(bad.Message, tc.says) {
			t.Fatalf("%s: error %v, want INVALID_ARGUMENT on %s saying %q", tc.name, bad, tc.field, tc.says)
		}
		if ok.Error != nil || ok.SequenceId != "good" {
			t.Fatalf("%s: the good step of the request: %v", tc.name, ok)
		}
	}
	// Without the session metadata even this client's own region is not found.
	resp, err := stub.SampleOnce(context.Background(), &pb.SampleRequest{Steps: []*pb.Step{good}})
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.Results[0].Error; e == nil || e.Field != "logits_ref.region" {
		t.Fatalf("a reference without the session metadata: %v", e)
	}
}

func TestShmUnregisterAndRefusalsOverTheControlSocket(t *testing.T) {
	s := startShmServer(t, "")
	plane, err := samplerd.ConnectShm(s.socket, 4096, "")
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Close()
	s.waitMetric(t, "samplerd_shm_regions", 1)
	if err := plane.Unregister(); err != nil {
		t.Fatal(err)
	}
	s.waitMetric(t, "samplerd_shm_regions", 0)
	var refused *samplerd.ShmError
	if err := plane.Unregister(); !errors.As(err, &refused) || refused.Code != codes.NotFound {
		t.Fatalf("a second unregister: %v, want NOT_FOUND", err)
	}
	if !plane.Alive() {
		t.Fatal("the control connection closed after a refused unregister")
	}
}

func TestShmFallsBackToBytesAndSaysSo(t *testing.T) {
	s := startShmServer(t, "")
	tcp := startServer(t, nil)
	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)

	for _, tc := range []struct {
		name, target, socket, says string
	}{
		{"TCP target", tcp.Address(), s.socket, "a unix: target"},
		{"no socket given", s.Address(), "", "no shared-memory socket"},
		{"nothing listening", s.Address(), s.socket + ".missing", "cannot connect"},
	} {
		logged.Reset()
		var counts sentRefs
		c := newClient(t, []string{tc.target}, samplerd.Options{DialOptions: []grpc.DialOption{counts.dialOption()},
			Shm: &samplerd.ShmOptions{Socket: tc.socket}})
		err := c.ShmStatus()
		if !errors.Is(err, samplerd.ErrShmUnavailable) || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("%s: ShmStatus = %v, want ErrShmUnavailable saying %q", tc.name, err, tc.says)
		}
		if !strings.Contains(logged.String(), tc.says) || !strings.Contains(logged.String(), "sending bytes") {
			t.Fatalf("%s: logged %q", tc.name, logged.String())
		}
		if _, err := c.Session(samplerd.SessionOptions{Seed: 2}).Step(context.Background(),
			samplerd.F32(make([]float32, 64)), nil); err != nil {
			t.Fatalf("%s: a step over bytes: %v", tc.name, err)
		}
		if refs, inline := counts.get(); refs != 0 || inline != 1 {
			t.Fatalf("%s: %d references, %d inline", tc.name, refs, inline)
		}
	}
	if _, err := samplerd.ConnectShm(s.socket+".missing", 4096, ""); !errors.Is(err, samplerd.ErrShmUnavailable) {
		t.Fatalf("ConnectShm to a missing socket: %v", err)
	}
	if s.metric(t, "samplerd_shm_clients") != 0 {
		t.Fatal("a fallen-back client holds a control connection")
	}
}

// After samplerd restarted (same sockets), the region is gone: the client sends bytes from then on, says so,
// and its steps are answered as before.
func TestShmClientSendsBytesAfterTheServerRestarted(t *testing.T) {
	dir := socketDir(t)
	s := startShmServer(t, dir)
	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(os.Stderr)
	var counts sentRefs
	c := newClient(t, []string{s.Address()}, samplerd.Options{DialOptions: []grpc.DialOption{counts.dialOption()},
		Shm: &samplerd.ShmOptions{Socket: s.socket, Size: 1 << 20}})
	sess := c.Session(samplerd.SessionOptions{Seed: 8})
	generate(t, sess, 3, nil)
	s.kill(syscall.SIGKILL)
	startShmServer(t, dir)
	generate(t, sess, 3, nil)
	err := c.ShmStatus()
	if !errors.Is(err, samplerd.ErrShmUnavailable) || !strings.Contains(err.Error(), "closed") ||
		!strings.Contains(logged.String(), "sending bytes") {
		t.Fatalf("ShmStatus = %v, logged %q", err, logged.String())
	}
	if refs, inline := counts.get(); refs != 6 || inline < 6 {
		t.Fatalf("%d tensors by reference, %d inline; want 6 and at least 6", refs, inline)
	}
}

// Sessions stepping at once share the region's parts: a part is rewritten only after the request that used it
// was answered, so every answer matches the bytes path.
func TestShmConcurrentSessionsShareThePartsSafely(t *testing.T) {
	s := startShmServer(t, "")
	var counts sentRefs
	viaShm := newClient(t, []string{s.Address()}, samplerd.Options{DialOptions: []grpc.DialOption{counts.dialOption()},
		Shm: &samplerd.ShmOptions{Socket: s.socket, Size: 128 << 10, Slots: 2}})
	viaBytes := newClient(t, []string{s.Address()}, samplerd.Options{})
	const sessions, steps = 8, 12
	tokens := func(c *samplerd.Client) [][]int32 {
		out := make([][]int32, sessions)
		var wg sync.WaitGroup
		for i := 0; i < sessions; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				sess := c.Session(samplerd.SessionOptions{SequenceID: "c" + strconv.Itoa(i), Seed: uint64(100 + i)})
				prev := int32(i)
				for step := 0; step < steps; step++ {
					logits, att, ashape := scripted.StepInputs(shape, uint32(i+11), step, prev)
					a := samplerd.F32(att, ashape...)
					r, err := sess.Step(context.Background(), samplerd.F32(logits), &a)
					if err != nil {
						t.Errorf("session %d step %d: %v", i, step, err)
						return
					}
					prev = r.Token
					out[i] = append(out[i], r.Token)
				}
			}(i)
		}
		wg.Wait()
		return out
	}
	got, want := tokens(viaShm), tokens(viaBytes)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tokens over shared memory %v, over bytes %v", got, want)
	}
	if refs, inline := counts.get(); refs != sessions*steps*2 || inline != 0 {
		t.Fatalf("%d tensors by reference, %d inline; want %d and 0", refs, inline, sessions*steps*2)
	}
}

// The L workload of `samplerctl bench` (vocab 128256, attention [32, 4096], f32), one session over a unix
// socket: bytes against Options.Shm (one copy into the region per step), and against a host writing its logits
// straight into a slot view (no copy, ShmSlotRing by hand). docs/benchmarks.md has the figures.
func BenchmarkShmStepL(b *testing.B) {
	s := startShmServer(b, "")
	const vocab, heads, kv = 128256, 32, 4096
	logits := make([]float32, vocab)
	att := make([]float32, heads*kv)
	for i := range logits {
		logits[i] = float32(i%977) * 0.01
	}
	for i := range att {
		att[i] = float32(i%61) * 0.05
	}
	a := samplerd.F32(att, heads, kv)
	for _, mode := range []string{"bytes", "shm"} {
		b.Run(mode, func(b *testing.B) {
			opts := samplerd.Options{}
			if mode == "shm" {
				opts.Shm = &samplerd.ShmOptions{Socket: s.socket, Size: 8 << 20}
			}
			c, err := samplerd.NewClient([]string{s.Address()}, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.ShmStatus(); (mode == "shm") != (err == nil) {
				b.Fatalf("%s: ShmStatus %v", mode, err)
			}
			sess := c.Session(samplerd.SessionOptions{Seed: 1, MaxRecent: samplerd.Int(0)})
			b.SetBytes(int64(4 * (vocab + heads*kv)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := sess.Step(context.Background(), samplerd.F32(logits), &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("shm-slot-views", func(b *testing.B) {
		plane, err := samplerd.ConnectShm(s.socket, 8<<20, "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer plane.Close()
		ring, err := samplerd.NewShmSlotRing(plane, 4*heads*kv) // the larger of the two tensors
		if err != nil {
			b.Fatal(err)
		}
		attRef, err := ring.Next().Write(a)
		if err != nil {
			b.Fatal(err)
		}
		stream, err := dialStub(b, s.Address()).Sample(plane.Context(context.Background()))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(4 * (vocab + heads*kv)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			slot := ring.Next()
			if slot.Offset == int(attRef.Offset) {
				slot = ring.Next()
			}
			copy(slot.F32(vocab), logits) // stands for the host's own write of its logits
			req := &pb.SampleRequest{Steps: []*pb.Step{{SequenceId: "bench", Step: uint64(i), Seed: 1,
				LogitsRef: slot.Ref(pb.DType_DTYPE_F32, vocab), AttentionRef: attRef}}}
			if err := stream.Send(req); err != nil {
				b.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil || resp.Results[0].Error != nil {
				b.Fatalf("%v %v", err, resp)
			}
		}
	})
}
