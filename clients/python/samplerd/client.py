"""The blocking client: `Client`, `Session`.

    client = samplerd.Client("localhost:50051")                 # or ["host-a:50051", "host-b:50051"]
    session = client.session("req-42", seed=7, profile="entropix", recent_tokens=prompt_ids[-64:])
    while ...:
        logits, attention = model.step(token)                  # numpy or torch, f32 / f16 / bf16
        r = session.step(logits, attention)                    # r.token, r.regime, r.applied, r.metrics
        token = r.token

Every session of a client shares one `Sample` stream per endpoint; steps from several threads are pipelined on
it (the server answers in request order). When the endpoint fails, unanswered steps are resent to the next
endpoint: the session owns the step index, seed and recent tokens, so the tokens are those an uninterrupted run
would have drawn.
"""
from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
import time
from typing import Any, Iterable, Optional, Sequence, Union

import grpc

from samplerd import _common
from samplerd._common import DEFAULT_MAX_RECENT, Failover, SessionState, StreamEnded
from samplerd.types import BatchError, StepError, StepResult
from samplerd.v1 import sampler_pb2 as pb
from samplerd.v1 import sampler_pb2_grpc


class _StreamMux:
    """One Sample stream shared by many callers. Requests are queued in order and the pending futures resolved
    FIFO as responses arrive (docs/contract.md section 2: one response per request, in request order). When the stream
    breaks, the pending futures fail (_common.stream_errors: a transport failure fails them all; a refusal of one
    request fails the oldest and sends the others again) and the mux is unusable."""

    def __init__(self, stub: sampler_pb2_grpc.SamplerStub, metadata: tuple):
        self._lock = threading.Lock()
        self._pending: collections.deque = collections.deque()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.broken: Optional[BaseException] = None
        self._call = stub.Sample(self._request_iter(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="samplerd-stream", daemon=True)
        self._reader.start()

    def _request_iter(self):
        while True:
            r = self._requests.get()
            if r is None:
                return
            yield r

    def submit(self, request: pb.SampleRequest) -> concurrent.futures.Future:
        f: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self.broken is not None:
                # Not sent: a stream refused for another request's sake is no reason to fail this step.
                raise self.broken if _common.is_retryable(self.broken) else _common.Resend()
            self._pending.append(f)
            self._requests.put(request)
        return f

    def _read(self) -> None:
        err: BaseException
        try:
            for resp in self._call:
                with self._lock:
                    f = self._pending.popleft() if self._pending else None
                if f is None:
                    err = _common.ProtocolError("samplerd: a response arrived with no request pending")
                    self._call.cancel()
                    break
                f.set_result(resp)
            else:
                err = StreamEnded()
        except grpc.RpcError as e:
            err = e
        self._fail(err)

    def _fail(self, err: BaseException) -> None:
        with self._lock:
            if self.broken is None:
                self.broken = err
            pending = list(self._pending)
            self._pending.clear()
        self._requests.put(None)  # releases gRPC's request-consuming thread
        for f, e in zip(pending, _common.stream_errors(err, len(pending))):
            if not f.done():
                f.set_exception(e)

    def abort(self, err: BaseException) -> None:
        self._fail(err)
        self._call.cancel()

    def close(self, timeout: float = 1.0) -> None:
        self._requests.put(None)  # half-close: the server answers what it has, then ends the call
        self._reader.join(timeout)
        if self._reader.is_alive():
            self._call.cancel()


class _Endpoint:
    def __init__(
        self,
        target: str,
        creds: Optional[grpc.ChannelCredentials],
        options: list,
        metadata: tuple,
        interceptors: Sequence[Any] = (),
    ):
        self.target = target
        channel = grpc.secure_channel(target, creds, options) if creds else grpc.insecure_channel(target, options)
        self.channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self.stub = sampler_pb2_grpc.SamplerStub(self.channel)
        self._metadata = metadata
        self._mux: Optional[_StreamMux] = None
        self._lock = threading.Lock()

    def wait_watching(self, seconds: float) -> None:
        """Waits `seconds` watching the channel, so that a connection attempt progresses meanwhile: grpcio drives a
        handshake only from threads that poll it, and between calls none does but its backup poller, every 5 s; after
        a plain sleep a replica that came back would go unused for seconds."""
        deadline = time.monotonic() + seconds
        ready = grpc.channel_ready_future(self.channel)
        try:
            ready.result(timeout=seconds)
        except grpc.FutureTimeoutError:
            pass
        finally:
            ready.cancel()
        time.sleep(max(0.0, deadline - time.monotonic()))

    def mux(self) -> _StreamMux:
        with self._lock:
            if self._mux is None or self._mux.broken is not None:
                self._mux = _StreamMux(self.stub, self._metadata)
            return self._mux

    def close(self) -> None:
        with self._lock:
            mux, self._mux = self._mux, None
        if mux is not None:
            mux.close()
        self.channel.close()


class Session:
    """One generation (sequence). Holds the step index, the seed and the recent tokens, and sends one step at a
    time; not thread-safe (a sequence is sequential), but sessions of one client may run in different threads."""

    def __init__(self, client: "Client", state: SessionState):
        self._client = client
        self._state = state

    sequence_id = property(lambda self: self._state.sequence_id)
    profile = property(lambda self: self._state.profile)
    seed = property(lambda self: self._state.seed, doc="0 until the server picked one, then that seed")
    step_index = property(lambda self: self._state.step_index, doc="index of the next step")
    recent_tokens = property(lambda self: list(self._state.recent_tokens), doc="oldest first")

    def extend(self, tokens: Iterable[int]) -> None:
        """Appends tokens the host chose itself (prompt, forced tokens) to the recent tokens."""
        self._state.extend(tokens)

    def step(
        self,
        logits: Any,
        attention: Any = None,
        *,
        params: Any = None,
        top_logprobs: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> StepResult:
        """Samples the next token from `logits` ([vocab]) and optional pre-softmax `attention` ([heads, kv_len]
        or [layers, heads, kv_len]). `params` overrides the session's overrides for this step. Raises
        StepError if the server rejects the step, or refuses its request at stream level (then `field` is empty
        and `code` the stream's status; steps of other sessions on the stream are sent again); the session does
        not advance. ValueError, with nothing sent, for a request over the client's max_message_bytes.
        Unavailable if no endpoint answers."""
        st = self._state.make_step(logits, attention, params, top_logprobs)
        r = self._client._send(pb.SampleRequest(steps=[st]), timeout)
        return self._state.commit(r.results[0])


class Client:
    """A samplerd client. `target`: one gRPC target ("host:port", "unix:/path", "dns:///name:port" - several
    addresses are balanced round-robin) or a list of targets tried in turn when one fails.

    `tls`: None/False = plaintext; True = TLS with the system roots; a `samplerd.TLS` (CA, client certificate for
    mutual TLS, server name) or grpc.ChannelCredentials. `token`: sent as `authorization: Bearer <token>` on
    every call. `timeout`: seconds a step may take before its endpoint is given up on. `failover_timeout`:
    how long a step keeps being resent, endpoint after endpoint, before Unavailable is raised.
    `max_message_bytes`: the largest message either way; set it to the server's --max_message_bytes (the default,
    64 MiB, is the server's default), so that a request the server would refuse, ending the stream that other
    sessions share, fails locally with ValueError instead.
    `options`: gRPC channel arguments, `(key, value)` pairs that replace the client's defaults of the same key.
    `interceptors`: grpc client interceptors (grpc.UnaryUnaryClientInterceptor, ...StreamStreamClientInterceptor)
    wrapped around every endpoint's channel. Thread-safe; use as a context manager or call close()."""

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
        self._eps = [_Endpoint(t, creds, channel_options, self._metadata, interceptors) for t in self.endpoints]
        self._failover = Failover(len(self._eps), failover_timeout)
        self._closed = False
        self._lock = threading.Lock()
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    @property
    def active_endpoint(self) -> str:
        """The target the next step goes to."""
        return self.endpoints[self._failover.active]

    @property
    def failovers(self) -> int:
        """How many times this client moved to another endpoint after a failure."""
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
    ) -> Session:
        """A new generation. `sequence_id` None = a random one. `seed` 0 = the server picks one on the first
        step (then this session sends it on). `profile` "" = the server's default. `params`: overrides (a
        dict, Params or SamplingParams) sent with every step. `recent_tokens`: the prompt's tail; the session
        appends each drawn token and sends the last `max_recent`."""
        return Session(
            self, SessionState(sequence_id, seed, profile, params, recent_tokens, max_recent, top_logprobs, start_step)
        )

    def sample_batch(self, items: Iterable[tuple], *, timeout: Optional[float] = None) -> list[StepResult]:
        """One request carrying a step of each session: `items` are `(session, logits)` or
        `(session, logits, attention)`. Returns the results in order; each accepted session advances. If some
        steps are rejected, raises BatchError after advancing the others (`.results` has both kinds). If an answer
        does not match its step, raises ProtocolError and no session advances."""
        items = [tuple(it) for it in items]
        sessions = [it[0] for it in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("samplerd: a session appears twice in one batch")
        steps = [s._state.make_step(it[1], it[2] if len(it) > 2 else None) for s, it in zip(sessions, items)]
        resp = self._send(pb.SampleRequest(steps=steps), timeout)
        results = _common.commit_batch([s._state for s in sessions], resp)
        if any(isinstance(r, StepError) for r in results):
            raise BatchError(results)
        return results

    def _send(self, request: pb.SampleRequest, timeout: Optional[float]) -> pb.SampleResponse:
        timeout = self.timeout if timeout is None else timeout
        _common.check_size(request, self.max_message_bytes)

        def send(ep: _Endpoint) -> pb.SampleResponse:
            mux = ep.mux()
            try:
                resp = mux.submit(request).result(timeout)
            except concurrent.futures.TimeoutError:
                e = _common.DeadlineExceeded(f"no answer from {ep.target} within {timeout} s")
                mux.abort(e)
                raise e from None
            except grpc.RpcError as e:
                if _common.is_retryable(e):
                    raise
                return _common.refused(request, e)
            _common.check_response(request, resp)
            return resp

        return self._retry(send)

    def list_profiles(self, timeout: float = 10.0) -> pb.ListProfilesResponse:
        """The server's profiles with every parameter value, and the default profile's name."""
        return self._retry(
            lambda ep: ep.stub.ListProfiles(pb.ListProfilesRequest(), timeout=timeout, metadata=self._metadata)
        )

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """grpc.health.v1 status of the active endpoint: "SERVING", "NOT_SERVING", ..."""

        def check(ep: _Endpoint) -> str:
            call = ep.channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=_common.health_request,
                response_deserializer=_common.health_response,
            )
            return call(service, timeout=timeout, metadata=self._metadata)

        return self._retry(check)

    def _retry(self, call):
        """`call(endpoint)`, on the next endpoint after each retryable failure (_common.Retry)."""
        retry = _common.Retry(self._failover, self.endpoints, self._lock)
        while True:
            if self._closed:
                raise _common.client_closed()
            index = retry.index()
            try:
                return call(self._eps[index])
            except _common.Resend:
                continue
            except Exception as e:  # a call on a channel close() shut raises ValueError, not an RpcError
                if self._closed:
                    raise _common.client_closed() from e
                if not isinstance(e, grpc.RpcError) or not _common.is_retryable(e):
                    raise
                delay = retry.failed(index, e)
                self._eps[retry.index()].wait_watching(delay)

    def close(self) -> None:
        """Closes every endpoint; steps in flight and later ones raise Unavailable."""
        self._closed = True
        for ep in self._eps:
            ep.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
