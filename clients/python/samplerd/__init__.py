"""samplerd: Python client of the samplerd entropy-adaptive sampling service (samplerd.v1.Sampler over gRPC).

    import samplerd
    with samplerd.Client("localhost:50051") as client:
        session = client.session("req-1", seed=42, profile="entropix")
        r = session.step(logits, attention)      # numpy / torch, float32 / float16 / bfloat16, CPU
        print(r.token, r.regime.name, r.applied.temperature, r.metrics.logits_entropy)

`AsyncClient` is the asyncio variant. The generated stubs are `samplerd.v1.sampler_pb2` / `sampler_pb2_grpc` /
`profile_pb2`.
"""
from samplerd._common import DEFAULT_MAX_RECENT, TLS
from samplerd.aio import AsyncClient, AsyncSession
from samplerd.calibration import Calibration, CalibrationError, calibrate
from samplerd.client import Client, Session
from samplerd.tensors import Raw
from samplerd.types import (
    BatchError,
    Metrics,
    Params,
    ProtocolError,
    Regime,
    SamplerdError,
    StepError,
    StepResult,
    TokenLogprob,
    Unavailable,
)
from samplerd.v1 import profile_pb2, sampler_pb2, sampler_pb2_grpc

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Session",
    "AsyncClient",
    "AsyncSession",
    "StepResult",
    "Params",
    "Metrics",
    "Regime",
    "TokenLogprob",
    "TLS",
    "Raw",
    "SamplerdError",
    "StepError",
    "BatchError",
    "Unavailable",
    "ProtocolError",
    "DEFAULT_MAX_RECENT",
    "calibrate",
    "Calibration",
    "CalibrationError",
    "sampler_pb2",
    "sampler_pb2_grpc",
    "profile_pb2",
]
