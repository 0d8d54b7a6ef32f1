package samplerd

// The shared-memory plane (docs/shm.md): steps whose tensors sit in a memfd shared with samplerd instead of
// travelling in the gRPC message, for hosts on the same machine or pod as the server.
//
// With the Client, one option does it (the client's Session.Step and SampleBatch then write each request's
// tensors into the region and send references):
//
//	client, err := samplerd.NewClient([]string{"unix:/run/samplerd/samplerd.sock"},
//	    samplerd.Options{Shm: &samplerd.ShmOptions{Socket: "/run/samplerd/shm.sock"}})
//	if err := client.ShmStatus(); err != nil { /* sending bytes, and why (also logged) */ }
//
// By hand, for a host that writes its logits straight into the region (no copy at all):
//
//	plane, err := samplerd.ConnectShm("/run/samplerd/shm.sock", 8<<20, "host")  // errors.Is(err, ErrShmUnavailable): send bytes
//	ring, err := samplerd.NewShmSlotRing(plane, vocab*4)
//	slot := ring.Next()
//	copyLogitsInto(slot.F32(vocab))                       // a []float32 view of the slot
//	step.LogitsRef = slot.Ref(pb.DType_DTYPE_F32, int64(vocab))
//	stub.SampleOnce(plane.Context(ctx), &pb.SampleRequest{Steps: []*pb.Step{step}})
//
// The region is an anonymous memfd sealed against shrinking (F_SEAL_SHRINK | F_SEAL_SEAL, as the C++ and Python
// clients seal it; growing is harmless since the server maps the size it saw), so samplerd can map it without
// risk of SIGBUS; it is passed once over the control socket (AF_UNIX SOCK_SEQPACKET, SCM_RIGHTS). A slot must
// not be rewritten until the step that references it is answered. Closing the plane (or the process ending)
// makes the server drop the region once no step reads it.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// ShmSessionMetadata is the metadata key a call names its plane's session in.
const ShmSessionMetadata = "samplerd-shm-session"

// ErrShmUnavailable: there is no shared-memory plane to use (a TCP target, no socket given, nothing listening
// on it, or the plane's connection closed); the caller sends bytes.
var ErrShmUnavailable = errors.New("samplerd: no shared-memory plane")

// ShmError is the server's refusal of a region (its google.rpc code and message).
type ShmError struct {
	Code    codes.Code
	Message string
}

func (e *ShmError) Error() string {
	return fmt.Sprintf("samplerd refused the shared-memory region: %s (%v)", e.Message, e.Code)
}

// Larger than any ShmControlResponse (a code, a message, two tokens and a size).
const maxShmResponseBytes = 4096

// DefaultShmTimeout bounds each control round trip of ConnectShm and ConnectShmWithToken (the Client's default
// Timeout; a Client uses its own Timeout).
const DefaultShmTimeout = 10 * time.Second

// ShmPlane is one control connection and one registered region. Safe for concurrent use; the caller decides
// which bytes of Data each step uses.
type ShmPlane struct {
	mu      sync.Mutex // one control round trip at a time
	sock    int
	memfd   int
	data    []byte
	session string
	region  string
	timeout time.Duration // for each control round trip
}

// ConnectShm connects to samplerd's --shm_socket at socketPath, creates and seals a memfd of size bytes, maps
// it read-write here and registers it. An error wrapping ErrShmUnavailable when the socket cannot be reached;
// a *ShmError when the server refuses the region (for example RESOURCE_EXHAUSTED over its per-client limits,
// UNAUTHENTICATED from a server with --auth_token_file: use ConnectShmWithToken).
func ConnectShm(socketPath string, size int, name string) (*ShmPlane, error) {
	return ConnectShmWithToken(socketPath, size, name, "")
}

// ConnectShmWithToken is ConnectShm presenting token (a token of the server's --auth_token_file, without
// "Bearer "; empty = none) with the register, which such a server requires.
func ConnectShmWithToken(socketPath string, size int, name, token string) (*ShmPlane, error) {
	return ConnectShmWithTimeout(socketPath, size, name, token, DefaultShmTimeout)
}

// ConnectShmWithTimeout is ConnectShmWithToken with timeout bounding each control round trip of the plane (the
// register here, Exchange and Unregister later; DefaultShmTimeout when <= 0). A server that does not answer in
// time (hung, stopped) closes the plane with an error wrapping ErrShmUnavailable.
func ConnectShmWithTimeout(socketPath string, size int, name, token string, timeout time.Duration) (*ShmPlane, error) {
	if timeout <= 0 {
		timeout = DefaultShmTimeout
	}
	if size <= 0 {
		return nil, errors.New("samplerd: a shared-memory region needs at least one byte")
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: socket(AF_UNIX, SOCK_SEQPACKET): %v", ErrShmUnavailable, err)
	}
	p := &ShmPlane{sock: sock, memfd: -1, timeout: timeout}
	if err := unix.Connect(sock, &unix.SockaddrUnix{Name: socketPath}); err != nil {
		p.Close()
		return nil, fmt.Errorf("%w: cannot connect to the shared-memory socket %s: %v", ErrShmUnavailable, socketPath, err)
	}
	fail := func(what string, err error) (*ShmPlane, error) {
		p.Close()
		return nil, fmt.Errorf("samplerd: %s: %w", what, err)
	}
	if p.memfd, err = unix.MemfdCreate("samplerd-shm", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err != nil {
		return fail("memfd_create", err)
	}
	if err := unix.Ftruncate(p.memfd, int64(size)); err != nil {
		return fail("ftruncate of the memfd", err)
	}
	if _, err := unix.FcntlInt(uintptr(p.memfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		return fail("F_ADD_SEALS", err)
	}
	if p.data, err = unix.Mmap(p.memfd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fail("mmap of the memfd", err)
	}
	register := &pb.ShmControlRequest{Kind: &pb.ShmControlRequest_Register{Register: &pb.ShmRegister{Name: name}}}
	if token != "" {
		register.Authorization = "Bearer " + token
	}
	resp, err := p.Exchange(register, p.memfd)
	if err != nil {
		p.Close()
		return nil, err
	}
	if resp.Code != 0 {
		p.Close()
		return nil, &ShmError{Code: codes.Code(resp.Code), Message: resp.Message}
	}
	p.session, p.region = resp.Session, resp.Region
	return p, nil
}

// Exchange is one control round trip: request out (with fd passed as SCM_RIGHTS when fd >= 0), the response
// in. An error wrapping ErrShmUnavailable when the socket fails or closes, or when the round trip takes longer
// than the plane's timeout (the connection is then closed: a late answer would be taken for the next one's); the
// response's own code is left to the caller.
func (p *ShmPlane) Exchange(request *pb.ShmControlRequest, fd int) (*pb.ShmControlResponse, error) {
	wire, err := proto.Marshal(request)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sock < 0 {
		return nil, fmt.Errorf("%w: the plane is closed", ErrShmUnavailable)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	deadline := time.Now().Add(p.timeout)
	if err := p.await(unix.POLLOUT, deadline, func() error {
		return unix.Sendmsg(p.sock, wire, oob, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	}); err != nil {
		p.closeSocket()
		return nil, fmt.Errorf("%w: send on the shared-memory socket: %v", ErrShmUnavailable, err)
	}
	answer := make([]byte, maxShmResponseBytes)
	var n int
	if err := p.await(unix.POLLIN, deadline, func() (err error) {
		n, _, err = unix.Recvfrom(p.sock, answer, unix.MSG_DONTWAIT)
		return
	}); err != nil {
		p.closeSocket()
		return nil, fmt.Errorf("%w: receive on the shared-memory socket: %v", ErrShmUnavailable, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the shared-memory socket closed without an answer", ErrShmUnavailable)
	}
	resp := &pb.ShmControlResponse{}
	if err := proto.Unmarshal(answer[:n], resp); err != nil {
		return nil, fmt.Errorf("%w: the shared-memory socket answered with something that is not a ShmControlResponse: %v",
			ErrShmUnavailable, err)
	}
	return resp, nil
}

// await runs the non-blocking op until it does not return EAGAIN or EINTR, polling the socket for events in
// between, and gives up at deadline.
func (p *ShmPlane) await(events int16, deadline time.Time, op func() error) error {
	for {
		err := op()
		if err != unix.EAGAIN && err != unix.EINTR {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no answer within %v", p.timeout)
		}
		fds := []unix.PollFd{{Fd: int32(p.sock), Events: events}}
		if _, err := unix.Poll(fds, int((left+time.Millisecond-1)/time.Millisecond)); err != nil && err != unix.EINTR {
			return err
		}
	}
}

// closeSocket ends the control connection (p.mu held); the region stays mapped for views still in use.
func (p *ShmPlane) closeSocket() {
	if p.sock >= 0 {
		unix.Close(p.sock)
		p.sock = -1
	}
}

// Data is the region, mapped read-write.
func (p *ShmPlane) Data() []byte { return p.data }

// Size is the region's size in bytes.
func (p *ShmPlane) Size() int { return len(p.data) }

// Session is the token calls carry in ShmSessionMetadata.
func (p *ShmPlane) Session() string { return p.session }

// Region is the region's id, for TensorRef.region.
func (p *ShmPlane) Region() string { return p.region }

// Metadata is the session metadata a call using this plane's references carries.
func (p *ShmPlane) Metadata() metadata.MD { return metadata.Pairs(ShmSessionMetadata, p.session) }

// Context adds the session metadata to ctx's outgoing metadata (before the call starts).
func (p *ShmPlane) Context(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ShmSessionMetadata, p.session)
}

// Ref is a TensorRef to shape elements of dtype at byte offset of this region.
func (p *ShmPlane) Ref(offset int, dtype pb.DType, shape ...int64) *pb.TensorRef {
	return &pb.TensorRef{Region: p.region, Offset: uint64(offset), Dtype: dtype, Shape: append([]int64(nil), shape...)}
}

// Write copies t's bytes to byte offset (the one copy a host whose logits live elsewhere pays) and returns its
// TensorRef; an error when t is malformed or does not fit.
func (p *ShmPlane) Write(offset int, t Tensor) (*pb.TensorRef, error) {
	if !wellFormed(t.DType, t.Shape, len(t.Data)) {
		return nil, fmt.Errorf("samplerd: a %v tensor of shape %v cannot have %d bytes", t.DType, t.Shape, len(t.Data))
	}
	if offset < 0 || offset+len(t.Data) > len(p.data) {
		return nil, fmt.Errorf("samplerd: %d bytes at offset %d do not fit a region of %d", len(t.Data), offset, len(p.data))
	}
	copy(p.data[offset:], t.Data)
	return p.Ref(offset, t.DType, t.Shape...), nil
}

// Unregister asks the server to forget the region (the connection stays open).
func (p *ShmPlane) Unregister() error {
	resp, err := p.Exchange(&pb.ShmControlRequest{Kind: &pb.ShmControlRequest_Unregister{
		Unregister: &pb.ShmUnregister{Region: p.region}}}, -1)
	if err != nil {
		return err
	}
	if resp.Code != 0 {
		return &ShmError{Code: codes.Code(resp.Code), Message: resp.Message}
	}
	return nil
}

// Alive reports whether the control connection is still open: once samplerd closed it (it exited or
// restarted), the region is gone on its side and references to it are refused.
func (p *ShmPlane) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sock < 0 {
		return false
	}
	// The server writes only answers, so with no request outstanding any event is the connection's end.
	fds := []unix.PollFd{{Fd: int32(p.sock), Events: unix.POLLIN | unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 0
}

// Close closes the connection (the server drops the region once no step reads it) and unmaps it here; views
// of Data must not be used afterwards.
func (p *ShmPlane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeSocket()
	if p.data != nil {
		unix.Munmap(p.data)
		p.data = nil
	}
	if p.memfd >= 0 {
		unix.Close(p.memfd)
		p.memfd = -1
	}
	return nil
}

// ShmSlotRing cuts a plane into equal slots (64-byte aligned) handed out in turn: with at least (steps in
// flight + 1) slots, a slot is rewritten only after the step that referenced it was answered.
type ShmSlotRing struct {
	plane     *ShmPlane
	slotBytes int
	count     int
	mu        sync.Mutex
	next      int
}

// NewShmSlotRing cuts plane into slots of at least slotBytes; an error when not one fits.
func NewShmSlotRing(plane *ShmPlane, slotBytes int) (*ShmSlotRing, error) {
	slot := align64(slotBytes)
	if slot <= 0 || plane.Size()/slot < 1 {
		return nil, fmt.Errorf("samplerd: a plane of %d bytes holds no slot of %d", plane.Size(), slotBytes)
	}
	return &ShmSlotRing{plane: plane, slotBytes: slot, count: plane.Size() / slot}, nil
}

// Count is the number of slots; SlotBytes their size.
func (r *ShmSlotRing) Count() int     { return r.count }
func (r *ShmSlotRing) SlotBytes() int { return r.slotBytes }

// Next is the next slot in turn.
func (r *ShmSlotRing) Next() ShmSlot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ShmSlot{Plane: r.plane, Offset: r.next * r.slotBytes, Size: r.slotBytes}
	r.next = (r.next + 1) % r.count
	return s
}

// ShmSlot is Size bytes at Offset of a plane.
type ShmSlot struct {
	Plane  *ShmPlane
	Offset int
	Size   int
}

// Bytes is the slot's memory.
func (s ShmSlot) Bytes() []byte { return s.Plane.data[s.Offset : s.Offset+s.Size] }

// F32 is a writable []float32 view of the slot's first n elements (write logits there: no copy at all); it
// panics when they do not fit.
func (s ShmSlot) F32(n int) []float32 {
	if n < 0 || 4*n > s.Size {
		panic(fmt.Sprintf("samplerd: %d float32 do not fit a slot of %d bytes", n, s.Size))
	}
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&s.Plane.data[s.Offset])), n)
}

// U16 is a writable []uint16 view (float16 or bfloat16 bit patterns) of the slot's first n elements.
func (s ShmSlot) U16(n int) []uint16 {
	if n < 0 || 2*n > s.Size {
		panic(fmt.Sprintf("samplerd: %d 16-bit values do not fit a slot of %d bytes", n, s.Size))
	}
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&s.Plane.data[s.Offset])), n)
}

// Ref is a TensorRef to shape elements of dtype at the start of the slot.
func (s ShmSlot) Ref(dtype pb.DType, shape ...int64) *pb.TensorRef {
	return s.Plane.Ref(s.Offset, dtype, shape...)
}

// Write copies t into the slot and returns its TensorRef; an error when it is malformed or does not fit.
func (s ShmSlot) Write(t Tensor) (*pb.TensorRef, error) {
	if len(t.Data) > s.Size {
		return nil, fmt.Errorf("samplerd: a tensor of %d bytes does not fit a slot of %d", len(t.Data), s.Size)
	}
	return s.Plane.Write(s.Offset, t)
}

func align64(n int) int { return (n + 63) / 64 * 64 }

func itemSize(d pb.DType) int {
	switch d {
	case pb.DType_DTYPE_F32:
		return 4
	case pb.DType_DTYPE_F16, pb.DType_DTYPE_BF16:
		return 2
	}
	return 0
}

// wellFormed: a known dtype and prod(shape) x itemsize = n, every dimension >= 1 (without overflow).
func wellFormed(dtype pb.DType, shape []int64, n int) bool {
	bytes := uint64(itemSize(dtype))
	if bytes == 0 || len(shape) == 0 {
		return false
	}
	for _, d := range shape {
		if d < 1 || bytes > (uint64(1)<<62)/uint64(d) {
			return false
		}
		bytes *= uint64(d)
	}
	return bytes == uint64(n)
}

func refTensor(t *pb.Tensor) bool {
	return t != nil && wellFormed(t.Dtype, t.Shape, len(t.Data))
}

// ShmBytesFor is the room ReferenceTensors needs for req: its well-formed tensors back to back, 64-byte aligned.
func ShmBytesFor(req *pb.SampleRequest) int {
	total := 0
	for _, st := range req.Steps {
		for _, t := range []*pb.Tensor{st.Logits, st.Attention} {
			if refTensor(t) {
				total += align64(len(t.Data))
			}
		}
	}
	return total
}

// ReferenceTensors is a copy of req whose well-formed tensors (known dtype, byte length = prod(shape) x
// itemsize) are written into plane from byte offset on, back to back and 64-byte aligned, and referenced;
// other tensors stay inline, so the server answers exactly as for req. An error when they do not fit.
func ReferenceTensors(plane *ShmPlane, offset int, req *pb.SampleRequest) (*pb.SampleRequest, error) {
	if offset < 0 || offset%64 != 0 || offset+ShmBytesFor(req) > plane.Size() {
		return nil, fmt.Errorf("samplerd: the request's tensors need %d bytes from offset %d, the region has %d",
			ShmBytesFor(req), offset, plane.Size())
	}
	out := &pb.SampleRequest{Steps: make([]*pb.Step, len(req.Steps))}
	for i, st := range req.Steps {
		// A shallow copy: the tensors' bytes are copied once, into the region, and nothing of req is changed.
		c := &pb.Step{}
		st.ProtoReflect().Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			c.ProtoReflect().Set(f, v)
			return true
		})
		if refTensor(c.Logits) {
			c.LogitsRef, _ = plane.Write(offset, Tensor{DType: c.Logits.Dtype, Shape: c.Logits.Shape, Data: c.Logits.Data})
			offset = align64(offset + len(c.Logits.Data))
			c.Logits = nil
		}
		if refTensor(c.Attention) {
			c.AttentionRef, _ = plane.Write(offset, Tensor{DType: c.Attention.Dtype, Shape: c.Attention.Shape,
				Data: c.Attention.Data})
			offset = align64(offset + len(c.Attention.Data))
			c.Attention = nil
		}
		out.Steps[i] = c
	}
	return out, nil
}

// ShmOptions turn on the shared-memory plane for a Client (Options.Shm).
type ShmOptions struct {
	Socket string // the server's --shm_socket
	// Size is the region's size (64 MiB when 0), cut into Slots equal parts (4 when 0), one per request in
	// flight; a request whose tensors need more than a part is sent as bytes.
	Size  int
	Slots int
	Name  string // the region's name in the server's logs
}

// clientShm is a Client's plane and the parts of its region that requests in flight hold.
type clientShm struct {
	mu    sync.RWMutex // write-held only to unmap the plane; read-held while a request is written into it
	plane *ShmPlane    // set once; nil when bytes are sent from the start
	part  int
	free  chan int // offsets of the parts no request holds
	down  error    // why bytes are sent; nil while the plane is used
}

// newClientShm connects the plane (presenting token, the Client's, when set), or records and logs why the
// client sends bytes.
func newClientShm(targets []string, o ShmOptions, token string, timeout time.Duration) *clientShm {
	s := &clientShm{}
	if o.Size == 0 {
		o.Size = 64 << 20
	}
	if o.Slots == 0 {
		o.Slots = 4
	}
	switch {
	case len(targets) != 1 || !strings.HasPrefix(targets[0], "unix:"):
		s.fail(fmt.Errorf("%w: shared memory needs one samplerd on this machine (a unix: target), got %v",
			ErrShmUnavailable, targets))
	case o.Socket == "":
		s.fail(fmt.Errorf("%w: no shared-memory socket given", ErrShmUnavailable))
	case o.Slots < 0 || o.Size/o.Slots < 64:
		s.fail(fmt.Errorf("%w: a region of %d bytes cannot hold %d parts", ErrShmUnavailable, o.Size, o.Slots))
	default:
		plane, err := ConnectShmWithTimeout(o.Socket, o.Size, o.Name, token, timeout)
		if err != nil {
			s.fail(err)
			break
		}
		s.plane, s.part = plane, o.Size/o.Slots/64*64
		s.free = make(chan int, o.Slots)
		for i := 0; i < o.Slots; i++ {
			s.free <- i * s.part
		}
	}
	return s
}

func (s *clientShm) fail(err error) {
	s.down = err
	log.Printf("samplerd: warning: %v: sending bytes", err)
}

func (s *clientShm) status() error {
	if s == nil {
		return fmt.Errorf("%w: Options.Shm not set", ErrShmUnavailable)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.down
}

// reference is req with its tensors in a free part of the region, and the function that frees the part once
// the answer is in; req itself (and a no-op) when bytes are sent.
func (s *clientShm) reference(ctx context.Context, req *pb.SampleRequest) (*pb.SampleRequest, func(), error) {
	noop := func() {}
	if s == nil || s.plane == nil {
		return req, noop, nil
	}
	if need := ShmBytesFor(req); need == 0 || need > s.part {
		return req, noop, nil
	}
	if !s.plane.Alive() {
		s.markDown()
		return req, noop, nil
	}
	var offset int
	select {
	case offset = <-s.free:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	release := func() { s.free <- offset }
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.down != nil {
		release()
		return req, noop, nil
	}
	refs, err := ReferenceTensors(s.plane, offset, req)
	if err != nil {
		release()
		return req, noop, nil
	}
	return refs, release, nil
}

// lost: the server refused a region reference and the plane's connection is gone (samplerd exited or
// restarted). From then on the client sends bytes.
func (s *clientShm) lost(resp *pb.SampleResponse) bool {
	refused := false
	for _, r := range resp.Results {
		if e := r.GetError(); e != nil && (e.Field == "logits_ref.region" || e.Field == "attention_ref.region") {
			refused = true
		}
	}
	if !refused || s.plane.Alive() {
		return false
	}
	s.markDown()
	return true
}

func (s *clientShm) markDown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down == nil {
		s.fail(fmt.Errorf("%w: the shared-memory connection closed (samplerd exited or restarted)", ErrShmUnavailable))
	}
}

func (s *clientShm) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.plane != nil {
		s.plane.Close() // the plane stays set (closed): reference and lost read it without the lock
	}
	if s.down == nil {
		s.down = fmt.Errorf("%w: the client is closed", ErrShmUnavailable)
	}
}
