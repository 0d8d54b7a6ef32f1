"""What the blocking and the asyncio clients share: endpoints and credentials, the failover policy, and the
per-sequence state a session owns (step index, seed, recent tokens)."""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import grpc

from samplerd import tensors
from samplerd.types import ProtocolError, StepError, StepResult, Unavailable, params_proto, step_error
from samplerd.v1 import health_pb2, sampler_pb2 as pb

# How many recent tokens a session sends by default (penalties and the CLARIFY rule read them). Every client
# of this repository uses the same default, so their requests are identical.
DEFAULT_MAX_RECENT = 1024

# Transport failures after which the same step is sent again, to the next endpoint. A step is a pure function
# of its request (docs/contract.md section 5), so resending one the dead server may already have answered is safe.
# INTERNAL covers streams reset mid-frame by a dying peer.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)


class StreamEnded(grpc.RpcError):
    """The server closed the Sample stream while steps were still unanswered (for example while draining)."""

    def __init__(self, detail: str = "the server ended the Sample stream with steps unanswered"):
        super().__init__(detail)
        self._detail = detail

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._detail


def is_retryable(e: BaseException) -> bool:
    code = getattr(e, "code", None)
    return callable(code) and code() in RETRYABLE


class Resend(StreamEnded):
    """A step that was queued behind a request the server refused at stream level, or on a stream already ended
    by one. The server runs nothing after the refused request (docs/contract.md section 6), so the step is sent
    again on a fresh stream of the same endpoint; the endpoint did not fail, so this is not a failover."""

    def __init__(self, detail: str = "a request before this step was refused at stream level"):
        super().__init__(detail)


def client_closed() -> Unavailable:
    return Unavailable("samplerd: the client is closed")


def stream_errors(err: BaseException, n: int) -> list:
    """The errors of the `n` steps pending on a stream that ended with `err`, oldest first. A status that is not
    a transport failure (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ... for one message) belongs to the oldest: the
    server answered every request before the refused one and ran none after it, so the others are resent."""
    if n and isinstance(err, grpc.RpcError) and not is_retryable(err):
        return [err] + [Resend() for _ in range(n - 1)]
    return [err] * n


def refused(request: pb.SampleRequest, e: grpc.RpcError) -> pb.SampleResponse:
    """The answer to a request the server refused at stream level with `e`'s status: every step carries that status
    as its error (empty field), so the caller gets StepError / BatchError as for a step the server rejected."""
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
    message = f"the server refused the request and ended the Sample stream: {describe(e)}"
    return pb.SampleResponse(
        results=[
            pb.StepResult(sequence_id=st.sequence_id, step=st.step, error=pb.Error(code=code.value[0], message=message))
            for st in request.steps
        ]
    )


def check_size(request: pb.SampleRequest, max_message_bytes: int) -> None:
    """ValueError, before anything is sent, for a request the server would refuse at stream level for its size
    (taking every step pending on the shared stream with it)."""
    size = request.ByteSize()
    if size > max_message_bytes:
        raise ValueError(
            f"samplerd: the request is {size} bytes, over the client's max_message_bytes {max_message_bytes} "
            f"(set it to the server's --max_message_bytes)"
        )


@dataclass(frozen=True)
class TLS:
    """TLS settings. PEM values are bytes or a path. `root_certificates` None = the system roots;
    `certificate_chain` + `private_key` = mutual TLS; `server_name` overrides the name checked in the server's
    certificate (for addresses that are not in it, such as 127.0.0.1)."""

    root_certificates: Union[bytes, str, Path, None] = None
    certificate_chain: Union[bytes, str, Path, None] = None
    private_key: Union[bytes, str, Path, None] = None
    server_name: Optional[str] = None


def _pem(v: Union[bytes, str, Path, None]) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    return Path(v).read_bytes()


# round_robin: with a target that resolves to several addresses (dns:///name:port, ipv4:a:p,b:p), new streams
# go to a ready address, so a dead replica is skipped. Retries are ours (whole steps), not gRPC's.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_args(
    tls: Any, max_message_bytes: int, extra: Iterable[tuple[str, Any]] = ()
) -> tuple[Optional[grpc.ChannelCredentials], list]:
    """The credentials and channel arguments of every endpoint; `extra` (the caller's channel options) replaces
    a default of the same key."""
    # Reconnect backoff capped at 2 s (gRPC's default grows to 120 s): a restarted replica is used again soon.
    merged = dict(
        [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
    )
    merged.update(dict(extra))
    options = list(merged.items())
    if tls is None or tls is False:
        return None, options
    if isinstance(tls, grpc.ChannelCredentials):
        return tls, options
    if tls is True:
        tls = TLS()
    if not isinstance(tls, TLS):
        raise TypeError(
            f"samplerd: tls must be None, a bool, a samplerd.TLS or grpc.ChannelCredentials, "
            f"got {type(tls).__name__}"
        )
    creds = grpc.ssl_channel_credentials(
        _pem(tls.root_certificates), _pem(tls.private_key), _pem(tls.certificate_chain)
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return creds, options


def endpoints_of(target: Union[str, Sequence[str]]) -> list[str]:
    """One gRPC target, or several (one channel each, tried in turn on failure)."""
    eps = [target] if isinstance(target, str) else list(target)
    if not eps or not all(isinstance(e, str) and e for e in eps):
        raise ValueError(f"samplerd: target must be a non-empty gRPC target or a list of them, got {target!r}")
    return eps


def metadata_of(token: Optional[str]) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Failover:
    """Which endpoint is in use, and the move to the next one when it fails. Shared by all sessions of a
    client, so one failure moves every session. A step is retried, endpoint after endpoint, until it has been
    failing for `failover_timeout` seconds (and every endpoint was tried at least once): long enough for a
    replica to restart, bounded so that a host whose servers are all gone hears about it."""

    def __init__(self, n: int, failover_timeout: float):
        self.n = n
        self.active = 0
        self.failovers = 0
        self.failover_timeout = failover_timeout

    def failed(self, index: int) -> None:
        if self.active == index:
            self.active = (index + 1) % self.n
            self.failovers += 1

    def give_up(self, attempt: int, first_failure: float, now: float) -> bool:
        return attempt + 1 >= self.n and now - first_failure >= self.failover_timeout

    @staticmethod
    def backoff(attempt: int) -> float:
        return min(0.5, 0.02 * (2**attempt))


class DeadlineExceeded(grpc.RpcError):
    """A step the active endpoint did not answer within the client's timeout: retryable, like an RPC that
    ended with DEADLINE_EXCEEDED."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self._detail = detail

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return self._detail


def describe(e: Optional[BaseException]) -> str:
    if e is None:
        return "no attempt made"
    code = getattr(e, "code", None)
    details = getattr(e, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(e)


class Retry:
    """One call's walk over the endpoints: the failover loop of every call of Client and AsyncClient.

        retry = Retry(failover, endpoints, lock)
        while True:
            index = retry.index()
            try:
                return call(endpoints[index])
            except grpc.RpcError as e:
                if not is_retryable(e):
                    raise
                time.sleep(retry.failed(index, e))     # or await asyncio.sleep(...)

    `failed` moves the client past the failed endpoint and returns how long to wait before the next attempt,
    or raises Unavailable once the call has been failing for the failover timeout."""

    def __init__(self, failover: Failover, endpoints: Sequence[str], lock: Any = None):
        self._failover = failover
        self._endpoints = endpoints
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._attempt = 0
        self._first_failure: Optional[float] = None

    def index(self) -> int:
        with self._lock:
            return self._failover.active

    def failed(self, index: int, error: BaseException) -> float:
        with self._lock:
            self._failover.failed(index)
        now = time.monotonic()
        if self._first_failure is None:
            self._first_failure = now
        if self._failover.give_up(self._attempt, self._first_failure, now):
            raise Unavailable(
                f"samplerd: no endpoint of {list(self._endpoints)} answered for "
                f"{now - self._first_failure:.1f} s: {describe(error)}"
            ) from error
        delay = Failover.backoff(self._attempt)
        self._attempt += 1
        return delay


class SessionState:
    """The per-sequence state the protocol leaves to the client (docs/contract.md section 2): next step index, seed
    (the server's pick is adopted after the first answer), profile, parameter overrides and recent tokens."""

    def __init__(
        self,
        sequence_id: Optional[str],
        seed: int,
        profile: str,
        params: Any,
        recent_tokens: Iterable[int],
        max_recent: int,
        top_logprobs: int,
        start_step: int,
    ):
        if max_recent < 0:
            raise ValueError(f"samplerd: max_recent must be >= 0, got {max_recent}")
        self.sequence_id = sequence_id if sequence_id else uuid.uuid4().hex
        self.seed = int(seed or 0)
        self.profile = profile or ""
        self.params = params_proto(params)
        self.max_recent = max_recent
        self.recent_tokens: list[int] = [int(t) for t in recent_tokens][-max_recent:] if max_recent else []
        self.top_logprobs = top_logprobs
        self.step_index = int(start_step)

    def extend(self, tokens: Iterable[int]) -> None:
        """Appends tokens that were not drawn by samplerd (prompt, forced tokens) to the recent tokens."""
        self.recent_tokens.extend(int(t) for t in tokens)
        if self.max_recent == 0:
            self.recent_tokens.clear()
        elif len(self.recent_tokens) > self.max_recent:
            del self.recent_tokens[: -self.max_recent]

    def make_step(
        self, logits: Any, attention: Any = None, params: Any = None, top_logprobs: Optional[int] = None
    ) -> pb.Step:
        st = pb.Step(
            sequence_id=self.sequence_id,
            step=self.step_index,
            recent_tokens=self.recent_tokens,
            profile=self.profile,
            seed=self.seed,
            top_logprobs=self.top_logprobs if top_logprobs is None else top_logprobs,
        )
        tensors.logits_tensor(logits, st.logits)
        if attention is not None:
            tensors.attention_tensor(attention, st.attention)
        p = params_proto(params) if params is not None else self.params
        if p is not None:
            st.params.CopyFrom(p)
        return st

    def check(self, r: pb.StepResult) -> None:
        """ProtocolError unless `r` answers this session's next step."""
        if not echoes(r, self.sequence_id) or r.step != self.step_index:
            raise ProtocolError(
                f"samplerd: expected the result of {self.sequence_id!r} step {self.step_index}, "
                f"got {r.sequence_id!r} step {r.step}"
            )

    def commit(self, r: pb.StepResult) -> StepResult:
        """Checks the echo, raises StepError for a rejected step, else advances and returns the result."""
        self.check(r)
        if r.HasField("error"):
            raise step_error(r, self.sequence_id, self.step_index)
        if self.seed == 0:
            self.seed = r.seed
        self.step_index += 1
        if self.max_recent:
            self.recent_tokens.append(r.token)
            if len(self.recent_tokens) > self.max_recent:
                del self.recent_tokens[0]
        return StepResult.from_proto(r)


def commit_batch(states: Sequence[SessionState], response: pb.SampleResponse) -> list:
    """Each session's StepResult, or StepError for a rejected step (that session does not advance). Every echo is
    checked before any session advances: on a mismatch none does (ProtocolError), so no session moves past a
    token its caller never saw."""
    for state, r in zip(states, response.results):
        state.check(r)
    results: list = []
    for state, r in zip(states, response.results):
        try:
            results.append(state.commit(r))
        except StepError as e:
            results.append(e)
    return results


# A refused step echoes at most this many bytes of its sequence_id (cut at a UTF-8 character boundary).
MAX_SEQUENCE_ID_BYTES = 256


def echoes(r: pb.StepResult, sequence_id: str) -> bool:
    """Whether `r` answers the step of `sequence_id`: the id itself, or for a refused step, its cut echo."""
    if r.sequence_id == sequence_id:
        return True
    full, echo = sequence_id.encode(), r.sequence_id.encode()
    return (
        r.HasField("error")
        and len(full) > MAX_SEQUENCE_ID_BYTES
        and MAX_SEQUENCE_ID_BYTES - 3 <= len(echo) <= MAX_SEQUENCE_ID_BYTES
        and full.startswith(echo)
    )


def check_response(request: pb.SampleRequest, response: pb.SampleResponse) -> None:
    if len(response.results) != len(request.steps):
        raise ProtocolError(f"samplerd: {len(request.steps)} steps sent, {len(response.results)} results received")


def health_request(service: str) -> bytes:
    return health_pb2.HealthCheckRequest(service=service).SerializeToString()


def health_response(data: bytes) -> str:
    """ "SERVING", "NOT_SERVING", ... as grpc.health.v1 names them."""
    status = health_pb2.HealthCheckResponse.FromString(data).status
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
