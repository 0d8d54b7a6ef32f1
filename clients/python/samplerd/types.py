"""Plain-Python views of samplerd's answers: `StepResult` and its parts, and the errors the client raises."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import grpc

from samplerd.v1 import profile_pb2, sampler_pb2 as pb


class Regime(enum.IntEnum):
    """`samplerd.v1.Regime` without the prefix: `Regime.ARGMAX.name == "ARGMAX"`."""

    UNSPECIFIED = profile_pb2.REGIME_UNSPECIFIED
    ARGMAX = profile_pb2.REGIME_ARGMAX
    CLARIFY = profile_pb2.REGIME_CLARIFY
    EXPLORE = profile_pb2.REGIME_EXPLORE
    RESAMPLE = profile_pb2.REGIME_RESAMPLE
    ADAPTIVE = profile_pb2.REGIME_ADAPTIVE
    FIXED = profile_pb2.REGIME_FIXED


# Field names in the proto's declaration order, from the proto itself: a field added there is one edit, and the
# views below fail loudly (an unexpected keyword) until they take it.
_PARAM_FIELDS = tuple(f.name for f in profile_pb2.SamplingParams.DESCRIPTOR.fields if f.name != "logit_bias")
METRIC_FIELDS = tuple(f.name for f in pb.Metrics.DESCRIPTOR.fields)


@dataclass(frozen=True)
class Params:
    """Sampling parameters (`samplerd.v1.SamplingParams`); None = not set. In a result, the values the draw
    actually used; as a request override, unset fields keep the profile's value."""

    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    n_adaptive_samples: Optional[int] = None
    clarifying_token: Optional[int] = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    @staticmethod
    def from_proto(m: profile_pb2.SamplingParams) -> "Params":
        return Params(
            **{f: (getattr(m, f) if m.HasField(f) else None) for f in _PARAM_FIELDS}, logit_bias=dict(m.logit_bias)
        )

    def to_proto(self) -> profile_pb2.SamplingParams:
        m = profile_pb2.SamplingParams(**{f: getattr(self, f) for f in _PARAM_FIELDS if getattr(self, f) is not None})
        m.logit_bias.update(self.logit_bias)
        return m


def params_proto(p: Any) -> Optional[profile_pb2.SamplingParams]:
    """A request override from a `Params`, a dict of the same fields, a `SamplingParams` message or None."""
    if p is None:
        return None
    if isinstance(p, profile_pb2.SamplingParams):
        return p
    if isinstance(p, Params):
        return p.to_proto()
    if isinstance(p, Mapping):
        unknown = set(p) - set(_PARAM_FIELDS) - {"logit_bias"}
        if unknown:
            raise ValueError(
                f"samplerd: unknown sampling parameter(s) {sorted(unknown)}; "
                f"expected some of {list(_PARAM_FIELDS) + ['logit_bias']}"
            )
        return Params(**p).to_proto()
    raise TypeError(f"samplerd: params must be a Params, a dict or a SamplingParams, got {type(p).__name__}")


@dataclass(frozen=True)
class Metrics:
    """The six uncertainty metrics of the step (bits, bits^2); attention ones are None without attention."""

    logits_entropy: Optional[float] = None
    logits_varentropy: Optional[float] = None
    attn_entropy: Optional[float] = None
    attn_varentropy: Optional[float] = None
    agreement: Optional[float] = None
    interaction_strength: Optional[float] = None

    @staticmethod
    def from_proto(m: pb.Metrics) -> "Metrics":
        return Metrics(**{f: (getattr(m, f) if m.HasField(f) else None) for f in METRIC_FIELDS})


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float


@dataclass(frozen=True)
class StepResult:
    """One answered step. `logprob` is in nats under the unmodified logits; `applied` holds the parameters the
    draw used (temperature 0 for greedy); `seed` is the one the draw used (the server's pick if none was sent)."""

    sequence_id: str
    step: int
    token: int
    logprob: float
    regime: Regime
    applied: Params
    metrics: Metrics
    top: tuple = ()
    seed: int = 0
    profile: str = ""
    server_micros: int = 0

    @staticmethod
    def from_proto(r: pb.StepResult) -> "StepResult":
        return StepResult(
            sequence_id=r.sequence_id,
            step=r.step,
            token=r.token,
            logprob=r.logprob,
            regime=Regime(r.regime),
            applied=Params.from_proto(r.applied),
            metrics=Metrics.from_proto(r.metrics),
            top=tuple(TokenLogprob(t.token, t.logprob) for t in r.top),
            seed=r.seed,
            profile=r.profile,
            server_micros=r.server_micros,
        )


class SamplerdError(Exception):
    """Base of the errors this package raises."""


class StepError(SamplerdError):
    """The server rejected one step (`StepResult.error`): `code` is a grpc.StatusCode, `field` the offending
    field of the Step. The session did not advance; fix the input and call step() again."""

    def __init__(self, code: int, field: str, message: str, sequence_id: str = "", step: int = 0):
        self.code = _status_code(code)
        self.field, self.message, self.sequence_id, self.step = field, message, sequence_id, step
        super().__init__(f"samplerd rejected step {step} of {sequence_id!r}: {self.code.name} {field}: {message}")


class BatchError(SamplerdError):
    """Some steps of a sample_batch() were rejected. `results` holds, in request order, a StepResult for each
    accepted step (those sessions advanced) and a StepError for each rejected one (those did not)."""

    def __init__(self, results: list):
        self.results = results
        errors = [r for r in results if isinstance(r, StepError)]
        super().__init__(f"{len(errors)} of {len(results)} steps rejected; first: {errors[0]}")


class Unavailable(SamplerdError):
    """No endpoint answered within the client's failover_timeout. `__cause__` is the last transport error."""


class ProtocolError(SamplerdError):
    """The server's answer does not match the request (wrong count or order of results)."""


def _status_code(code: int) -> grpc.StatusCode:
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c
    return grpc.StatusCode.UNKNOWN


def step_error(r: pb.StepResult, sequence_id: str, step: int) -> StepError:
    return StepError(r.error.code, r.error.field, r.error.message, sequence_id, step)
