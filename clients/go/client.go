// Package samplerd is the Go client of samplerd, entropy-adaptive token sampling for LLMs over gRPC
// (samplerd.v1.Sampler).
//
//	client, err := samplerd.NewClient([]string{"localhost:50051"}, samplerd.Options{})
//	session := client.Session(samplerd.SessionOptions{SequenceID: "req-42", Seed: 7, Profile: "entropix"})
//	r, err := session.Step(ctx, samplerd.F32(logits), &att)   // att := samplerd.F32(scores, layers, heads, kvLen)
//	// r.Token, r.RegimeName(), r.Applied.GetTemperature(), r.Metrics.GetLogitsEntropy()
//
// All sessions of a client share one Sample stream per endpoint; concurrent steps are pipelined on it and
// matched to their answers in order (the server answers in request order). When an endpoint fails, the
// unanswered steps are sent again to the next one: the session owns the step index, seed and recent tokens,
// so the tokens are those an uninterrupted run would have drawn.
package samplerd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// DefaultMaxRecent is how many recent tokens a session sends unless told otherwise; the same in every client
// of this repository.
const DefaultMaxRecent = 1024

// Int is a pointer to v, for the optional fields of SessionOptions and StepOptions: MaxRecent: samplerd.Int(0).
func Int(v int) *int { return &v }

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// round_robin: with a target resolving to several addresses (dns:///name:port, ipv4:a:p,b:p) new streams go to
// a ready address. Retries are the client's (whole steps), not gRPC's.
const serviceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// Options configure a Client; the zero value is plaintext with the defaults below.
type Options struct {
	TLS   *tls.Config // nil = plaintext
	Token string      // sent as "authorization: Bearer <token>" on every call
	// Timeout is how long one attempt of a step may take before its endpoint is given up on (10 s): opening the
	// stream, waiting behind other steps, the write (flow control included) and the answer. On timeout the stream
	// is cancelled and the step goes to the next endpoint.
	Timeout         time.Duration
	FailoverTimeout time.Duration // how long a failing step is resent, endpoint after endpoint; 10 s
	// MaxMessageBytes is the largest request the client sends (64 MiB, the server's --max_message_bytes default;
	// set it to the server's flag). A larger request fails locally with ErrInvalidArgument, nothing sent.
	MaxMessageBytes int
	DialOptions     []grpc.DialOption
	// Shm sends the tensors through samplerd's shared-memory plane (docs/shm.md, shm.go) when the client has one
	// unix: target and the server's --shm_socket can be reached and answers the register within Timeout;
	// otherwise the client sends bytes, logs why, and ShmStatus returns the reason.
	Shm *ShmOptions
}

// Client talks to one or several samplerd endpoints. Safe for concurrent use.
type Client struct {
	endpoints []string
	eps       []*endpoint
	opts      Options

	mu        sync.Mutex
	active    int
	failovers int
	closed    bool

	shm *clientShm
}

type endpoint struct {
	target string
	conn   *grpc.ClientConn
	stub   pb.SamplerClient
	md     metadata.MD

	mu     sync.Mutex // never held across a blocking call
	mux    *streamMux
	closed bool
}

// getMux returns the endpoint's stream, a fresh one (opening in the background) when there is none or it broke.
func (e *endpoint) getMux() (*streamMux, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if e.mux == nil || e.mux.isBroken() {
		e.mux = openStreamMux(e.stub, e.md)
	}
	return e.mux, nil
}

// NewClient connects (lazily) to each target: "host:port", "unix:/path", "dns:///name:port" (several
// addresses are balanced round-robin) or "ipv4:a:p,b:p" (a fixed address list, also round-robin). Several
// targets are tried in turn when one fails.
func NewClient(targets []string, opts Options) (*Client, error) {
	if len(targets) == 0 {
		return nil, errors.New("samplerd: at least one target is needed")
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.FailoverTimeout == 0 {
		opts.FailoverTimeout = 10 * time.Second
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	c := &Client{endpoints: append([]string(nil), targets...), opts: opts}
	md := metadata.MD{}
	if opts.Token != "" {
		md.Set("authorization", "Bearer "+opts.Token)
	}
	if opts.Shm != nil {
		c.shm = newClientShm(targets, *opts.Shm, opts.Token, opts.Timeout)
		if c.shm.plane != nil {
			md.Set(ShmSessionMetadata, c.shm.plane.Session())
		}
	}
	for _, t := range targets {
		dial := []grpc.DialOption{
			grpc.WithDefaultServiceConfig(serviceConfig),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes), grpc.MaxCallSendMsgSize(opts.MaxMessageBytes)),
			// Reconnect backoff capped at 2 s (the default grows to 120 s): a restarted replica is used again soon.
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
				BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 5 * time.Second}),
		}
		if opts.TLS != nil {
			dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(opts.TLS)))
		} else {
			dial = append(dial, grpc.WithInsecure())
		}
		target := t
		if addrs, ok := staticAddresses(t); ok {
			// grpc-go has no ipv4:/ipv6: address-list scheme (C-core and grpc-js do): a manual resolver serves it.
			r := manual.NewBuilderWithScheme("samplerd-static")
			state := resolver.State{}
			for _, a := range addrs {
				state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
			}
			r.InitialState(state)
			dial = append(dial, grpc.WithResolvers(r))
			target = r.Scheme() + ":///" + t
		}
		conn, err := grpc.Dial(target, append(dial, opts.DialOptions...)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("samplerd: %s: %w", t, err)
		}
		c.eps = append(c.eps, &endpoint{target: t, conn: conn, stub: pb.NewSamplerClient(conn), md: md})
	}
	return c, nil
}

func staticAddresses(target string) ([]string, bool) {
	for _, scheme := range []string{"ipv4:", "ipv6:"} {
		if strings.HasPrefix(target, scheme) && !strings.HasPrefix(target, scheme+"//") {
			return strings.Split(strings.TrimPrefix(target, scheme), ","), true
		}
	}
	return nil, false
}

// Endpoints are the targets given to NewClient.
func (c *Client) Endpoints() []string { return c.endpoints }

// ActiveEndpoint is the target the next step goes to.
func (c *Client) ActiveEndpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endpoints[c.active]
}

// Failovers counts the moves to another endpoint after a failure.
func (c *Client) Failovers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failovers
}

// ShmStatus is nil while the client sends tensors through the shared-memory plane (Options.Shm), else why it
// sends bytes (wrapping ErrShmUnavailable, or a *ShmError when the server refused the region).
func (c *Client) ShmStatus() error { return c.shm.status() }

// Close closes every connection; steps in flight and later return ErrClosed at once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	for _, e := range c.eps {
		e.mu.Lock()
		e.closed = true
		if e.mux != nil {
			e.mux.close()
		}
		e.mu.Unlock()
		e.conn.Close()
	}
	if c.shm != nil {
		c.shm.close()
	}
	return nil
}

// Retryable transport failures: the same step is sent again, to the next endpoint. A step is a pure function of
// its request (docs/contract.md section 5), so resending one a dead server may have answered is safe. Internal covers
// streams reset mid-frame by a dying peer.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.Aborted, codes.DeadlineExceeded, codes.Internal:
		return true
	}
	return false
}

// activeIndex is the endpoint to use; ErrClosed once Close was called.
func (c *Client) activeIndex() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	return c.active, nil
}

func (c *Client) failed(index int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == index {
		c.active = (index + 1) % len(c.eps)
		c.failovers++
	}
}

// retry runs call on the active endpoint until it succeeds, fails with a non-retryable error, ctx ends, the
// client is closed, or every endpoint was tried and the failures lasted FailoverTimeout. A step whose stream
// ended for another step's message (errResend) goes again at once on a fresh stream of the same endpoint.
func (c *Client) retry(ctx context.Context, call func(e *endpoint) error) error {
	var first time.Time
	for failures := 0; ; {
		index, err := c.activeIndex()
		if err != nil {
			return err
		}
		err = call(c.eps[index])
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if _, closed := c.activeIndex(); closed != nil {
			return closed
		}
		resend := errors.Is(err, errResend)
		if !resend && !retryable(err) {
			return err
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		if resend {
			if now.Sub(first) >= c.opts.FailoverTimeout {
				return fmt.Errorf("%w (%v) for %.1f s: %v", ErrUnavailable, c.endpoints, now.Sub(first).Seconds(), err)
			}
			continue
		}
		c.failed(index)
		if failures+1 >= len(c.eps) && now.Sub(first) >= c.opts.FailoverTimeout {
			return fmt.Errorf("%w (%v) for %.1f s: %v", ErrUnavailable, c.endpoints, now.Sub(first).Seconds(), err)
		}
		delay := 20 * time.Millisecond << failures
		if failures > 5 || delay > 500*time.Millisecond {
			delay = 500 * time.Millisecond
		}
		failures++
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkRequest refuses locally a request the server would refuse for the whole stream, taking the other steps
// on it along: one over MaxMessageBytes (bytes sent through the shared-memory plane count as inline, as the
// server counts them).
func (c *Client) checkRequest(req *pb.SampleRequest) error {
	if n := proto.Size(req); n > c.opts.MaxMessageBytes {
		return fmt.Errorf("%w: the request is %d bytes encoded, over the client's MaxMessageBytes of %d (which should "+
			"match the server's --max_message_bytes)", ErrInvalidArgument, n, c.opts.MaxMessageBytes)
	}
	return nil
}

func (c *Client) send(ctx context.Context, req *pb.SampleRequest) (*pb.SampleResponse, error) {
	if err := c.checkRequest(req); err != nil {
		return nil, err
	}
	var resp *pb.SampleResponse
	err := c.retry(ctx, func(e *endpoint) error {
		// Timeout bounds the whole attempt: the stream's opening, queueing behind other steps, the write and the
		// answer all happen while this function waits on attempt.
		attempt, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
		timeout := status.Errorf(codes.DeadlineExceeded, "no answer from %s within %v", e.target, c.opts.Timeout)
		mux, err := e.getMux()
		if err != nil {
			return err
		}
		wire, release, err := c.shm.reference(attempt, req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Every part of the region is held by unanswered steps; they time out on their own.
			return timeout
		}
		defer release()
		call, err := mux.submit(wire)
		if err != nil {
			return err
		}
		select {
		case r := <-call.done:
			if r.err != nil {
				var refused *refusal
				if errors.As(r.err, &refused) {
					return refused.stepError(req)
				}
				return r.err
			}
			if len(r.resp.Results) != len(req.Steps) {
				return fmt.Errorf("%w: %d steps sent, %d results received", ErrProtocol, len(req.Steps), len(r.resp.Results))
			}
			if wire != req && c.shm.lost(r.resp) {
				// samplerd restarted under the references: the same steps again, as bytes.
				return status.Error(codes.Unavailable, "the shared-memory plane closed under the request")
			}
			resp = r.resp
			return nil
		case <-attempt.Done():
			if ctx.Err() != nil {
				mux.withdraw(call)
				return ctx.Err()
			}
			// The stream is given up on (its write may be blocked by a peer that does not read): every step on
			// it fails over.
			mux.abort(timeout)
			return timeout
		}
	})
	return resp, err
}

// ListProfiles returns the server's profiles with every parameter value, and the default profile's name.
func (c *Client) ListProfiles(ctx context.Context) (*pb.ListProfilesResponse, error) {
	var resp *pb.ListProfilesResponse
	err := c.retry(ctx, func(e *endpoint) error {
		var err error
		resp, err = e.stub.ListProfiles(metadata.NewOutgoingContext(ctx, e.md), &pb.ListProfilesRequest{})
		return err
	})
	return resp, err
}

// Health is the grpc.health.v1 status of the active endpoint for service ("" = the whole server):
// "SERVING", "NOT_SERVING", ...
func (c *Client) Health(ctx context.Context, service string) (string, error) {
	var resp *grpc_health_v1.HealthCheckResponse
	err := c.retry(ctx, func(e *endpoint) error {
		var err error
		resp, err = grpc_health_v1.NewHealthClient(e.conn).Check(metadata.NewOutgoingContext(ctx, e.md),
			&grpc_health_v1.HealthCheckRequest{Service: service})
		return err
	})
	if err != nil {
		return "", err
	}
	return resp.Status.String(), nil
}

// BatchItem is one session's step in a SampleBatch. Attention may be nil.
type BatchItem struct {
	Session   *Session
	Logits    Tensor
	Attention *Tensor
}

// SampleBatch sends one request carrying a step of each session and returns the results in order; each
// accepted session advances. If some steps are rejected it returns a *BatchError after advancing the others.
// When a result does not answer its step (ErrProtocol), no session advances.
func (c *Client) SampleBatch(ctx context.Context, items []BatchItem) ([]*StepResult, error) {
	req := &pb.SampleRequest{}
	seen := map[*Session]bool{}
	for _, it := range items {
		if seen[it.Session] {
			return nil, fmt.Errorf("%w: a session appears twice in one batch", ErrInvalidArgument)
		}
		seen[it.Session] = true
		st, err := it.Session.makeStep(it.Logits, it.Attention, StepOptions{})
		if err != nil {
			return nil, err
		}
		req.Steps = append(req.Steps, st)
	}
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	for i, it := range items {
		if err := it.Session.answers(resp.Results[i]); err != nil {
			return nil, err
		}
	}
	results := make([]*StepResult, len(items))
	batchErr := &BatchError{Results: results, Errors: make([]*StepError, len(items))}
	rejected := false
	for i, it := range items {
		r, err := it.Session.commit(resp.Results[i])
		var se *StepError
		switch {
		case errors.As(err, &se):
			batchErr.Errors[i] = se
			rejected = true
		case err != nil:
			return nil, err
		default:
			results[i] = r
		}
	}
	if rejected {
		return nil, batchErr
	}
	return results, nil
}

// SessionOptions are the fixed parts of a generation.
type SessionOptions struct {
	SequenceID   string             // "" = a random one
	Seed         uint64             // 0 = the server picks one on the first step; the session then sends it
	Profile      string             // "" = the server's default
	Params       *pb.SamplingParams // overrides sent with every step
	RecentTokens []int32            // the prompt's tail, oldest first
	MaxRecent    *int               // how many recent tokens each step carries: nil = DefaultMaxRecent, 0 = none (as in every client)
	TopLogprobs  int32
	StartStep    uint64
}

// StepOptions change one step.
type StepOptions struct {
	Params      *pb.SamplingParams // replaces the session's overrides for this step
	TopLogprobs *int32
}

// Session is one generation: step index, seed and recent tokens. One step at a time per session.
type Session struct {
	client    *Client
	id        string
	profile   string
	params    *pb.SamplingParams
	maxRecent int
	top       int32
	seed      uint64
	step      uint64
	recent    []int32
}

// Session starts a generation.
func (c *Client) Session(o SessionOptions) *Session {
	id := o.SequenceID
	if id == "" {
		b := make([]byte, 16)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	maxRecent := DefaultMaxRecent
	if o.MaxRecent != nil {
		maxRecent = max(*o.MaxRecent, 0)
	}
	s := &Session{client: c, id: id, profile: o.Profile, params: o.Params, maxRecent: maxRecent,
		top: o.TopLogprobs, seed: o.Seed, step: o.StartStep}
	s.Extend(o.RecentTokens...)
	return s
}

// SequenceID is the key of the generation.
func (s *Session) SequenceID() string { return s.id }

// Seed is the seed in force: 0 until the server picked one when none was given.
func (s *Session) Seed() uint64 { return s.seed }

// StepIndex is the index of the next step.
func (s *Session) StepIndex() uint64 { return s.step }

// RecentTokens returns a copy of the recent tokens, oldest first.
func (s *Session) RecentTokens() []int32 { return append([]int32(nil), s.recent...) }

// Extend appends tokens the host chose itself (prompt, forced tokens).
func (s *Session) Extend(tokens ...int32) {
	s.recent = append(s.recent, tokens...)
	if len(s.recent) > s.maxRecent {
		s.recent = append([]int32(nil), s.recent[len(s.recent)-s.maxRecent:]...)
	}
}

// Step samples the next token from logits ([vocab]) and optional pre-softmax attention ([heads, kvLen] or
// [layers, heads, kvLen]). A rejected step returns a *StepError and the session does not advance; an error
// wrapping ErrUnavailable means no endpoint answered.
func (s *Session) Step(ctx context.Context, logits Tensor, attention *Tensor) (*StepResult, error) {
	return s.StepWithOptions(ctx, logits, attention, StepOptions{})
}

// StepWithOptions is Step with per-step overrides.
func (s *Session) StepWithOptions(ctx context.Context, logits Tensor, attention *Tensor, o StepOptions) (*StepResult, error) {
	st, err := s.makeStep(logits, attention, o)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.send(ctx, &pb.SampleRequest{Steps: []*pb.Step{st}})
	if err != nil {
		return nil, err
	}
	return s.commit(resp.Results[0])
}

func (s *Session) makeStep(logits Tensor, attention *Tensor, o StepOptions) (*pb.Step, error) {
	// protobuf cannot encode a string that is not UTF-8 (and samplerd would refuse the whole message).
	if !utf8.ValidString(s.id) {
		return nil, fmt.Errorf("%w: the sequence id %q is not valid UTF-8", ErrInvalidArgument, s.id)
	}
	if !utf8.ValidString(s.profile) {
		return nil, fmt.Errorf("%w: the profile %q is not valid UTF-8", ErrInvalidArgument, s.profile)
	}
	if err := logits.check("logits", 1); err != nil {
		return nil, err
	}
	st := &pb.Step{SequenceId: s.id, Step: s.step, Logits: logits.proto(), RecentTokens: s.recent, Profile: s.profile,
		Seed: s.seed, TopLogprobs: s.top, Params: s.params}
	if attention != nil {
		if err := attention.check("attention", 2, 3); err != nil {
			return nil, err
		}
		st.Attention = attention.proto()
	}
	if o.Params != nil {
		st.Params = o.Params
	}
	if o.TopLogprobs != nil {
		st.TopLogprobs = *o.TopLogprobs
	}
	return st, nil
}

// maxSequenceIDBytes is how much of its sequence_id a refused step echoes at most (cut at a UTF-8 character
// boundary).
const maxSequenceIDBytes = 256

// echoes reports whether r answers the step of id: the id itself, or for a refused step, its cut echo.
func echoes(r *pb.StepResult, id string) bool {
	if r.SequenceId == id {
		return true
	}
	n := len(r.SequenceId)
	return r.Error != nil && len(id) > maxSequenceIDBytes && n >= maxSequenceIDBytes-3 && n <= maxSequenceIDBytes &&
		strings.HasPrefix(id, r.SequenceId)
}

// answers is nil when r answers the session's next step, else an ErrProtocol.
func (s *Session) answers(r *pb.StepResult) error {
	if !echoes(r, s.id) || r.Step != s.step {
		return fmt.Errorf("%w: expected %q step %d, got %q step %d", ErrProtocol, s.id, s.step, r.SequenceId, r.Step)
	}
	return nil
}

func (s *Session) commit(r *pb.StepResult) (*StepResult, error) {
	if err := s.answers(r); err != nil {
		return nil, err
	}
	if r.Error != nil {
		return nil, &StepError{Code: codes.Code(r.Error.Code), Field: r.Error.Field, Message: r.Error.Message,
			SequenceID: s.id, Step: s.step}
	}
	if s.seed == 0 {
		s.seed = r.Seed
	}
	s.step++
	if s.maxRecent > 0 {
		s.Extend(r.Token)
	}
	return resultFromProto(r), nil
}

// streamMux is one Sample stream shared by many callers. Requests are queued in order and written by the mux's
// own goroutine, so a write blocked by flow control holds no lock a caller, the timeout path or failover needs;
// answers are matched to the written requests FIFO. How a stream ends decides what its waiters get:
//   - a transport failure, a timeout (abort) or Close: every waiter gets that error;
//   - a status that refuses one message (samplerd answers every request before the refused one and runs nothing
//     after it): the oldest waiter gets the status as a refusal, every other waiter errResend.
type streamMux struct {
	ctx    context.Context // the stream's; cancelling it ends the stream and unblocks a write
	cancel context.CancelFunc
	wake   chan struct{} // the writer has requests to write

	mu      sync.Mutex
	pending []*muxCall // unanswered requests in stream order: the written ones, then the queued ones
	queue   []*muxCall // the requests not yet handed to the stream (a tail of pending)
	broken  error
}

type muxCall struct {
	req     *pb.SampleRequest
	done    chan muxResult // buffered: the one result is never waited for by the mux
	written bool           // handed to the stream, so an answer to it may come
}

type muxResult struct {
	resp *pb.SampleResponse
	err  error
}

// errResend: the step's stream ended for another step's message before this step was answered; the step was not
// run, so it goes again on a fresh stream.
var errResend = errors.New("samplerd: the stream ended for another step's message")

// refusal is a stream-level status that refuses the request it is given to.
type refusal struct{ status *status.Status }

func (r *refusal) Error() string { return r.status.Err().Error() }

// stepError is the refusal as the documented errors: a *StepError for one step, a *BatchError whose every step
// carries it for a batch.
func (r *refusal) stepError(req *pb.SampleRequest) error {
	errs := make([]*StepError, len(req.Steps))
	for i, st := range req.Steps {
		errs[i] = &StepError{Code: r.status.Code(), Message: r.status.Message(), SequenceID: st.SequenceId, Step: st.Step}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return &BatchError{Results: make([]*StepResult, len(errs)), Errors: errs}
}

// openStreamMux returns at once; the stream opens in the mux's writer goroutine, bounded by the callers' timeouts
// (a timed-out caller aborts the mux, which cancels the opening).
func openStreamMux(stub pb.SamplerClient, md metadata.MD) *streamMux {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), md))
	m := &streamMux{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	go m.write(stub)
	return m
}

func (m *streamMux) isBroken() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.broken != nil
}

// submit queues req; its result arrives on the call's done channel.
func (m *streamMux) submit(req *pb.SampleRequest) (*muxCall, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broken != nil {
		return nil, m.broken
	}
	call := &muxCall{req: req, done: make(chan muxResult, 1)}
	m.pending = append(m.pending, call)
	m.queue = append(m.queue, call)
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return call, nil
}

// withdraw takes back the call of a caller that stopped waiting. One never written is removed; one that may be
// on the stream stays as a placeholder, so the answers after it still reach their own callers, and its answer is
// dropped.
func (m *streamMux) withdraw(call *muxCall) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if call.written {
		return
	}
	m.pending = without(m.pending, call)
	m.queue = without(m.queue, call)
}

func without(calls []*muxCall, call *muxCall) []*muxCall {
	for i, c := range calls {
		if c == call {
			return append(calls[:i:i], calls[i+1:]...)
		}
	}
	return calls
}

func (m *streamMux) write(stub pb.SamplerClient) {
	stream, err := stub.Sample(m.ctx)
	if err != nil {
		m.ended(err)
		return
	}
	go m.read(stream)
	for {
		select {
		case <-m.wake:
		case <-m.ctx.Done():
			return
		}
		for {
			m.mu.Lock()
			if m.broken != nil || len(m.queue) == 0 {
				m.mu.Unlock()
				break
			}
			call := m.queue[0]
			m.queue = m.queue[1:]
			call.written = true
			m.mu.Unlock()
			if err := stream.Send(call.req); err != nil {
				if err != io.EOF {
					// grpc-go could not send this message (it ends the call with this error): the message's own
					// failure, not the server's, and the others go again.
					m.refuse(call, fmt.Errorf("%w: %v", ErrInvalidArgument, err))
				}
				// io.EOF: the call ended; Recv returns its status and the reader ends the mux.
				return
			}
		}
	}
}

func (m *streamMux) read(stream pb.Sampler_SampleClient) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			m.ended(err)
			return
		}
		m.mu.Lock()
		if len(m.pending) == 0 || !m.pending[0].written {
			m.mu.Unlock()
			m.abort(fmt.Errorf("%w: a response arrived with no request pending", ErrProtocol))
			return
		}
		call := m.pending[0]
		m.pending = m.pending[1:]
		m.mu.Unlock()
		call.done <- muxResult{resp: resp}
	}
}

// ended is the stream's end with err (from opening it or from Recv).
func (m *streamMux) ended(err error) {
	switch {
	case err == io.EOF:
		m.abort(status.Error(codes.Unavailable, "the server ended the Sample stream with steps unanswered"))
	case retryable(err):
		m.abort(err)
	default:
		m.mu.Lock()
		var oldest *muxCall
		if len(m.pending) > 0 {
			oldest = m.pending[0]
		}
		m.mu.Unlock()
		m.refuse(oldest, &refusal{status: status.Convert(err)})
	}
}

// refuse ends the mux: culprit (when not nil and still pending) gets err, every other waiter errResend.
func (m *streamMux) refuse(culprit *muxCall, err error) {
	m.mu.Lock()
	if m.broken == nil {
		m.broken = errResend
	}
	for _, call := range m.pending {
		if call == culprit {
			call.done <- muxResult{err: err}
		} else {
			call.done <- muxResult{err: errResend}
		}
	}
	m.pending, m.queue = nil, nil
	m.mu.Unlock()
	m.cancel()
}

// abort ends the mux: every waiter gets err, and the stream is cancelled.
func (m *streamMux) abort(err error) {
	m.mu.Lock()
	if m.broken == nil {
		m.broken = err
	}
	for _, call := range m.pending {
		call.done <- muxResult{err: err}
	}
	m.pending, m.queue = nil, nil
	m.mu.Unlock()
	m.cancel()
}

func (m *streamMux) close() { m.abort(ErrClosed) }
