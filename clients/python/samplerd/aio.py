"""The asyncio client (grpc.aio): `AsyncClient`, `AsyncSession`; same behaviour as the blocking one.

    async with samplerd.AsyncClient("localhost:50051") as client:
        session = client.session("req-42", seed=7)
        r = await session.step(logits, attention)

Sessions of one client share one `Sample` stream per endpoint; steps from concurrent tasks are pipelined on it
and matched to their answers in order. On a transport failure the unanswered steps go to the next endpoint.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, Iterable, Optional, Sequence, Union

import grpc
import grpc.aio

from samplerd import _common
from samplerd._common import DEFAULT_MAX_RECENT, Failover, SessionState, StreamEnded
from samplerd.types import BatchError, ProtocolError, StepError, StepResult
from samplerd.v1 import sampler_pb2 as pb
from samplerd.v1 import sampler_pb2_grpc


class _Entry:
    """A request on the stream and the future of its answer. `sent`: its write has begun, so the server may answer
    it; an entry whose caller gave up then stays queued, and its answer is dropped when it arrives."""

    __slots__ = ("request", "future", "sent")

    def __init__(self, request: pb.SampleRequest, future: asyncio.Future):
        self.request, self.future, self.sent = request, future, False


class _AioStreamMux:
    """One Sample stream shared by the tasks of a client. submit() queues a request and returns the future of its
    answer without awaiting, so the queue is in the order of the calls; a writer task writes the requests in that
    order and a reader task resolves the futures FIFO. A caller only awaits its own future: a write held by flow
    control counts against the caller's timeout, and the write's end when the call is cancelled (grpc.aio raises
    CancelledError there) happens in the writer task, never in a caller's. A caller cancelled before its request
    is written takes it off the queue (the writer skips it); after, the entry stays as a placeholder."""

    def __init__(self, stub: sampler_pb2_grpc.SamplerStub, metadata: tuple):
        self._call = stub.Sample(metadata=metadata)
        self._pending: collections.deque = collections.deque()  # entries in write order, answered FIFO
        self._unsent: collections.deque = collections.deque()  # the tail of _pending not yet written
        self._wake = asyncio.Event()
        self._closing = False
        self.broken: Optional[BaseException] = None
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write())
        self._reader = loop.create_task(self._read())

    def submit(self, request: pb.SampleRequest) -> asyncio.Future:
        if self.broken is not None:
            # Not sent: a stream refused for another request's sake is no reason to fail this step.
            raise self.broken if _common.is_retryable(self.broken) else _common.Resend()
        entry = _Entry(request, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._unsent.append(entry)
        self._wake.set()
        return entry.future

    async def _write(self) -> None:
        try:
            while self.broken is None:
                if not self._unsent:
                    if self._closing:
                        await self._call.done_writing()
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                entry = self._unsent.popleft()
                if entry.future.done():
                    # Cancelled before its write: removed before any later request is written, so no answer
                    # can be matched to it.
                    self._pending.remove(entry)
                    continue
                entry.sent = True
                await self._call.write(entry.request)
        except BaseException:  # noqa: B902 - CancelledError when the call is cancelled; any failure ends the call
            # The reader then reports the call's status (or the cancellation) to the pending steps.
            self._call.cancel()

    async def _read(self) -> None:
        err: BaseException
        try:
            while True:
                resp = await self._call.read()
                if resp is grpc.aio.EOF:
                    err = StreamEnded()
                    break
                if not self._pending or not self._pending[0].sent:
                    err = ProtocolError("samplerd: a response arrived with no request pending")
                    self._call.cancel()
                    break
                entry = self._pending.popleft()
                if not entry.future.done():
                    entry.future.set_result(resp)
        except grpc.RpcError as e:
            err = e
        except asyncio.CancelledError:
            err = StreamEnded("the Sample stream was cancelled by the client")
        except Exception as e:  # a response that does not parse, for one
            self._call.cancel()
            err = StreamEnded(f"the Sample stream failed: {e!r}")
        self._fail(err)

    def _fail(self, err: BaseException) -> None:
        if self.broken is None:
            self.broken = err
        entries = list(self._pending)
        self._pending.clear()
        self._unsent.clear()
        self._writer.cancel()  # a write still waiting (on flow control, on the connection) has no stream to go to
        for entry, e in zip(entries, _common.stream_errors(err, len(entries))):
            if not entry.future.done():
                entry.future.set_exception(e)

    def abort(self, err: BaseException) -> None:
        self._fail(err)
        self._call.cancel()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        except Exception:
            pass
        self._call.cancel()
        self._writer.cancel()
        self._reader.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)


class _AioEndpoint:
    def __init__(
        self,
        target: str,
        creds: Optional[grpc.ChannelCredentials],
        options: list,
        metadata: tuple,
        interceptors: Sequence[Any] = (),
    ):
        self.target = target
        interceptors = list(interceptors) or None
        self.channel = (
            grpc.aio.secure_channel(target, creds, options, interceptors=interceptors)
            if creds
            else grpc.aio.insecure_channel(target, options, interceptors=interceptors)
        )
        self.stub = sampler_pb2_grpc.SamplerStub(self.channel)
        self._metadata = metadata
        self._mux: Optional[_AioStreamMux] = None

    def mux(self) -> _AioStreamMux:
        if self._mux is None or self._mux.broken is not None:
            self._mux = _AioStreamMux(self.stub, self._metadata)
        return self._mux

    async def close(self) -> None:
        if self._mux is not None:
            await self._mux.close()
            self._mux = None
        await self.channel.close()


class AsyncSession:
    """One generation; `await session.step(...)`. One step at a time per session."""

    def __init__(self, client: "AsyncClient", state: SessionState):
        self._client = client
        self._state = state

    sequence_id = property(lambda self: self._state.sequence_id)
    profile = property(lambda self: self._state.profile)
    seed = property(lambda self: self._state.seed)
    step_index = property(lambda self: self._state.step_index)
    recent_tokens = property(lambda self: list(self._state.recent_tokens))

    def extend(self, tokens: Iterable[int]) -> None:
        self._state.extend(tokens)

    async def step(
        self,
        logits: Any,
        attention: Any = None,
        *,
        params: Any = None,
        top_logprobs: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> StepResult:
        """As Session.step. Cancelling the task that awaits it raises CancelledError there and leaves the client
        and the other sessions as they were; this session does not advance."""
        st = self._state.make_step(logits, attention, params, top_logprobs)
        r = await self._client._send(pb.SampleRequest(steps=[st]), timeout)
        return self._state.commit(r.results[0])


class AsyncClient:
    """As Client (same arguments), over grpc.aio. Create and use it inside a running event loop. `interceptors`
    are grpc.aio client interceptors."""

    def __init__(
        self,
        target: Union[str, Sequence[str]],
        *,
        tls: Any = None,
        token: Optional[str] = None,
        timeout: float = 10.0,
        failover_timeout: float = 10.0,
        max_message_bytes: int = 64 << 20,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
    ):
        self.endpoints = _common.endpoints_of(target)
        creds, channel_options = _common.channel_args(tls, max_message_bytes, options)
        self._metadata = _common.metadata_of(token)
        self._eps = [_AioEndpoint(t, creds, channel_options, self._metadata, interceptors) for t in self.endpoints]
        self._failover = Failover(len(self._eps), failover_timeout)
        self._closed = False
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    @property
    def active_endpoint(self) -> str:
        return self.endpoints[self._failover.active]

    @property
    def failovers(self) -> int:
        return self._failover.failovers

    def session(
        self,
        sequence_id: Optional[str] = None,
        *,
        seed: int = 0,
        profile: str = "",
        params: Any = None,
        recent_tokens: Iterable[int] = (),
        max_recent: int = DEFAULT_MAX_RECENT,
        top_logprobs: int = 0,
        start_step: int = 0,
    ) -> AsyncSession:
        """As Client.session."""
        return AsyncSession(
            self, SessionState(sequence_id, seed, profile, params, recent_tokens, max_recent, top_logprobs, start_step)
        )

    async def sample_batch(self, items: Iterable[tuple], *, timeout: Optional[float] = None) -> list[StepResult]:
        """As Client.sample_batch."""
        items = [tuple(it) for it in items]
        sessions = [it[0] for it in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("samplerd: a session appears twice in one batch")
        steps = [s._state.make_step(it[1], it[2] if len(it) > 2 else None) for s, it in zip(sessions, items)]
        resp = await self._send(pb.SampleRequest(steps=steps), timeout)
        results = _common.commit_batch([s._state for s in sessions], resp)
        if any(isinstance(r, StepError) for r in results):
            raise BatchError(results)
        return results

    async def _send(self, request: pb.SampleRequest, timeout: Optional[float]) -> pb.SampleResponse:
        timeout = self.timeout if timeout is None else timeout
        _common.check_size(request, self.max_message_bytes)

        async def send(ep: _AioEndpoint) -> pb.SampleResponse:
            mux = ep.mux()
            try:
                # The timeout covers the wait behind earlier requests and the write as well as the answer. When
                # this task is cancelled, wait_for cancels the future: the mux then drops the request if it is
                # not written yet, or the answer when it arrives, and CancelledError goes on to the caller.
                resp = await asyncio.wait_for(mux.submit(request), timeout)
            except asyncio.TimeoutError:
                e = _common.DeadlineExceeded(f"no answer from {ep.target} within {timeout} s")
                mux.abort(e)
                raise e from None
            except grpc.RpcError as e:
                if _common.is_retryable(e):
                    raise
                return _common.refused(request, e)
            _common.check_response(request, resp)
            return resp

        return await self._retry(send)

    async def list_profiles(self, timeout: float = 10.0) -> pb.ListProfilesResponse:
        return await self._retry(
            lambda ep: ep.stub.ListProfiles(pb.ListProfilesRequest(), timeout=timeout, metadata=self._metadata)
        )

    async def health(self, service: str = "", timeout: float = 5.0) -> str:
        def check(ep: _AioEndpoint):
            call = ep.channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=_common.health_request,
                response_deserializer=_common.health_response,
            )
            return call(service, timeout=timeout, metadata=self._metadata)

        return await self._retry(check)

    async def _retry(self, call):
        """As Client._retry, awaiting `call(endpoint)`."""
        retry = _common.Retry(self._failover, self.endpoints)
        while True:
            if self._closed:
                raise _common.client_closed()
            index = retry.index()
            try:
                return await call(self._eps[index])
            except _common.Resend:
                continue
            except Exception as e:  # a call on a channel close() shut raises grpc.aio.UsageError
                if self._closed:
                    raise _common.client_closed() from e
                if not isinstance(e, grpc.RpcError) or not _common.is_retryable(e):
                    raise
                await asyncio.sleep(retry.failed(index, e))

    async def close(self) -> None:
        """As Client.close."""
        self._closed = True
        for ep in self._eps:
            await ep.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
