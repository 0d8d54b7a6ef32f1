"""The shared-memory plane (docs/shm.md): steps whose tensors sit in a memfd shared with samplerd instead of
travelling in the gRPC message.

    plane = samplerd.shm.connect("/run/samplerd/shm.sock", size=8 << 20)   # None: use the bytes path
    ring = samplerd.shm.SlotRing(plane, slot_bytes=vocab * 4)
    slot = ring.next()
    logits_view = slot.array(np.float32, (vocab,))      # write the logits here: no copy at all
    step.logits_ref.CopyFrom(slot.ref(np.float32, (vocab,)))
    stub.SampleOnce(request, metadata=plane.metadata)
    response = plane.sample(request)        # or on the control socket itself: no gRPC round trip

or, for a tensor that lives elsewhere (numpy or CPU torch, float32 / float16 / bfloat16), one copy into the slot:
`step.logits_ref.CopyFrom(slot.write(tensor))`.

The region is an anonymous memfd sealed against shrinking (F_SEAL_SHRINK | F_SEAL_SEAL) so samplerd can map it
without risk of SIGBUS; it is passed once over the control socket (AF_UNIX SOCK_SEQPACKET, SCM_RIGHTS). A slot
must not be rewritten until the step that references it is answered: SlotRing hands out slots in turn, so a
ring of at least (steps in flight + 1) slots keeps that rule. Closing the plane (or the process ending) makes the
server drop the region once no step reads it.

`connect` falls back cleanly: for a TCP target, or when nothing listens on the socket, it logs why at WARNING and
returns None, and the caller sends bytes as before.
"""
from __future__ import annotations

import fcntl
import logging
import mmap
import os
import socket
from typing import Any, Optional, Sequence

import numpy as np

from samplerd.v1 import sampler_pb2 as pb

SESSION_METADATA = "samplerd-shm-session"
# The largest control packet either way (docs/shm.md).
MAX_PACKET_BYTES = 128 << 10

_log = logging.getLogger("samplerd.shm")

_DTYPES = {  # numpy dtype name -> wire dtype
    "float32": pb.DTYPE_F32,
    "float16": pb.DTYPE_F16,
    "bfloat16": pb.DTYPE_BF16,
}
_ITEMSIZE = {pb.DTYPE_F32: 4, pb.DTYPE_F16: 2, pb.DTYPE_BF16: 2}


class ShmError(Exception):
    """The server refused a region (its google.rpc code in `.code`), or the control socket failed."""

    def __init__(self, message: str, code: int = 14):
        super().__init__(message)
        self.code = code


class Plane:
    """One control connection and one registered region of `size` bytes. `token`: a bearer token of the server's
    --auth_token_file, which registering the region and `sample` need on such a server. `timeout`: seconds each
    send to and answer from the control socket may take (the default is the clients' step timeout); past it the
    plane is closed and ShmError raised (code 4, DEADLINE_EXCEEDED), as a hung server must not hang the caller."""

    def __init__(self, socket_path: str, size: int, name: str = "", token: Optional[str] = None, timeout: float = 10.0):
        if size <= 0:
            raise ValueError("a shared-memory region needs at least one byte")
        if not timeout or timeout <= 0:
            raise ValueError(f"the control socket's timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = timeout
        self._fd = -1
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(socket_path)
        except OSError as e:
            self._sock.close()
            raise ShmError(f"cannot connect to the shared-memory socket {socket_path}: {e}") from e
        try:
            self._fd = os.memfd_create("samplerd-shm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(self._fd, size)
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
            self.buffer = mmap.mmap(self._fd, size)
            self.size = size
            request = pb.ShmControlRequest()
            request.register.name = name
            if token:
                request.authorization = f"Bearer {token}"
            response = self.exchange(request, self._fd)
        except BaseException:
            self.close()
            raise
        if response.code != 0:
            self.close()
            raise ShmError(f"samplerd refused the shared-memory region: {response.message}", response.code)
        self.session = response.session
        self.region = response.region
        self.metadata = ((SESSION_METADATA, self.session),)

    def exchange(self, request: pb.ShmControlRequest, fd: Optional[int] = None) -> pb.ShmControlResponse:
        """One control round trip (with `fd` passed as SCM_RIGHTS when given), each way within `timeout`."""
        if self._sock is None:
            raise ShmError("the shared-memory plane is closed")
        data = request.SerializeToString()
        if len(data) > MAX_PACKET_BYTES:
            raise ShmError(
                f"the control request is {len(data)} bytes, over the socket's {MAX_PACKET_BYTES}-byte packets", 8
            )
        try:
            # A refused connection (over --shm_max_clients) is answered and closed at once: this packet may then
            # fail to go out, or arrive unread, which resets the connection; either way the answer waits in this
            # socket, readable once the error has been reported.
            try:
                if fd is None:
                    self._sock.send(data)
                else:
                    socket.send_fds(self._sock, [data], [fd])
            except OSError:
                answer = self._sock.recv(MAX_PACKET_BYTES, socket.MSG_DONTWAIT)
            else:
                try:
                    answer = self._sock.recv(MAX_PACKET_BYTES)
                except ConnectionResetError:
                    answer = self._sock.recv(MAX_PACKET_BYTES, socket.MSG_DONTWAIT)
        except socket.timeout as e:
            # An answer that comes later would be taken for the next request's: the connection is unusable.
            self.close()
            raise ShmError(f"no answer on the shared-memory socket within {self.timeout} s", 4) from e
        except OSError as e:  # the server went away (or closed this connection)
            raise ShmError(f"the shared-memory socket failed: {e}") from e
        if not answer:
            raise ShmError("the shared-memory socket closed without an answer")
        response = pb.ShmControlResponse()
        response.ParseFromString(answer)
        return response

    def sample(self, request: pb.SampleRequest) -> pb.SampleResponse:
        """Runs `request` on the control socket (no gRPC call): the SampleResponse a Sample stream would answer,
        a rejected step carrying its own `error`. ShmError with the code when the request as a whole is refused
        (8 RESOURCE_EXHAUSTED over the server's limits or the packet size, 16 UNAUTHENTICATED without an
        accepted token), 14 when the connection fails and 4 when no answer came within `timeout` (the plane is
        then closed). One call at a time per plane."""
        control = pb.ShmControlRequest()
        control.sample.CopyFrom(request)
        response = self.exchange(control)
        if response.code != 0:
            raise ShmError(response.message, response.code)
        return response.sample

    def ref(self, offset: int, dtype: Any, shape: Sequence[int]) -> pb.TensorRef:
        """A TensorRef to `shape` elements of `dtype` (numpy dtype, name, or wire DType) at byte `offset`."""
        return pb.TensorRef(region=self.region, offset=offset, dtype=_wire_dtype(dtype), shape=[int(d) for d in shape])

    def array(self, offset: int, dtype: Any, shape: Sequence[int]) -> np.ndarray:
        """A writable numpy view of the region (float32 / float16; bfloat16 has no numpy dtype: use `write`)."""
        count = int(np.prod(shape))
        return np.frombuffer(self.buffer, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)

    def write(self, offset: int, tensor: Any) -> pb.TensorRef:
        """Copies a numpy array or CPU torch tensor (float32 / float16 / bfloat16) to byte `offset` with one copy
        and returns its TensorRef."""
        if type(tensor).__module__.startswith("torch"):
            import torch  # only when given a torch tensor

            t = tensor.detach()
            name = str(t.dtype).replace("torch.", "")
            if name not in _DTYPES:
                raise TypeError(f"unsupported tensor dtype {t.dtype}")
            view = torch.frombuffer(self.buffer, dtype=t.dtype, count=t.numel(), offset=offset)
            view.copy_(t.reshape(-1))
            return self.ref(offset, name, tuple(t.shape))
        a = np.asarray(tensor)
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"unsupported array dtype {a.dtype}")
        np.copyto(self.array(offset, a.dtype, a.shape), a, casting="no")
        return self.ref(offset, a.dtype.name, a.shape)

    def unregister(self) -> None:
        request = pb.ShmControlRequest()
        request.unregister.region = self.region
        response = self.exchange(request)
        if response.code != 0:
            raise ShmError(response.message, response.code)

    def close(self) -> None:
        """Closes the connection (the server drops the region) and unmaps it here."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            self.buffer.close()
        except (AttributeError, BufferError):
            pass  # a numpy/torch view still exists: the mapping goes with it
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Plane":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Slot:
    """One slot of a SlotRing: `bytes` bytes at `offset` of the plane."""

    def __init__(self, plane: Plane, offset: int, size: int):
        self.plane, self.offset, self.size = plane, offset, size

    def array(self, dtype: Any, shape: Sequence[int]) -> np.ndarray:
        self._check(dtype, shape)
        return self.plane.array(self.offset, dtype, shape)

    def ref(self, dtype: Any, shape: Sequence[int]) -> pb.TensorRef:
        self._check(dtype, shape)
        return self.plane.ref(self.offset, dtype, shape)

    def write(self, tensor: Any) -> pb.TensorRef:
        nbytes = (
            tensor.numel() * tensor.element_size() if hasattr(tensor, "element_size") else np.asarray(tensor).nbytes
        )
        if nbytes > self.size:
            raise ValueError(f"a tensor of {nbytes} bytes does not fit a slot of {self.size}")
        return self.plane.write(self.offset, tensor)

    def _check(self, dtype: Any, shape: Sequence[int]) -> None:
        nbytes = int(np.prod(shape)) * _ITEMSIZE[_wire_dtype(dtype)]
        if nbytes > self.size:
            raise ValueError(f"{nbytes} bytes do not fit a slot of {self.size}")


class SlotRing:
    """The plane cut into equal slots (64-byte aligned), handed out in turn."""

    def __init__(self, plane: Plane, slot_bytes: int):
        self.slot_bytes = (slot_bytes + 63) // 64 * 64
        self.count = plane.size // self.slot_bytes
        if self.count < 1:
            raise ValueError(f"a plane of {plane.size} bytes holds no slot of {slot_bytes}")
        self._slots = [Slot(plane, i * self.slot_bytes, self.slot_bytes) for i in range(self.count)]
        self._next = 0

    def next(self) -> Slot:
        slot = self._slots[self._next]
        self._next = (self._next + 1) % self.count
        return slot


def connect(
    socket_path: Optional[str],
    size: int,
    target: Optional[str] = None,
    name: str = "",
    token: Optional[str] = None,
    timeout: float = 10.0,
) -> Optional[Plane]:
    """A Plane, or None (logged at WARNING with the reason) when the bytes path must be used instead: no socket
    path, a `target` that is not a unix: address (the server is on another machine), or a control socket that
    cannot be reached, refuses the region or does not answer within `timeout` seconds (Plane)."""
    if target is not None and not target.startswith("unix:"):
        _log.warning("shared memory needs samplerd on this machine (a unix: target), got %s: sending bytes", target)
        return None
    if not socket_path:
        _log.warning("no shared-memory socket given: sending bytes")
        return None
    try:
        return Plane(socket_path, size, name, token, timeout)
    except ShmError as e:
        _log.warning("%s: sending bytes", e)
        return None


def to_refs(request: pb.SampleRequest, plane: Plane) -> pb.SampleRequest:
    """A copy of `request` whose well-formed tensors (byte length = prod(shape) x itemsize, known dtype) are
    written into `plane` back to back (64-byte aligned) and referenced; other tensors stay inline, so the server
    answers exactly as for `request`. ValueError when they do not fit."""
    out = pb.SampleRequest()
    out.CopyFrom(request)
    offset = 0
    for step in out.steps:
        for name in ("logits", "attention"):
            if not step.HasField(name):
                continue
            t = getattr(step, name)
            item = _ITEMSIZE.get(t.dtype)
            shape = list(t.shape)
            if (
                item is None
                or not shape
                or any(d < 1 for d in shape)
                or int(np.prod(shape, dtype=object)) * item != len(t.data)
            ):
                continue
            if offset + len(t.data) > plane.size:
                raise ValueError(f"the request's tensors need more than the plane's {plane.size} bytes")
            plane.buffer[offset : offset + len(t.data)] = t.data
            ref = getattr(step, name + "_ref")
            ref.CopyFrom(pb.TensorRef(region=plane.region, offset=offset, dtype=t.dtype, shape=shape))
            step.ClearField(name)
            offset = (offset + len(t.data) + 63) // 64 * 64
    return out


def _wire_dtype(dtype: Any) -> int:
    if isinstance(dtype, int) and dtype in _ITEMSIZE:
        return dtype
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in _DTYPES:
        raise TypeError(f"unsupported dtype {dtype}")
    return _DTYPES[name]
