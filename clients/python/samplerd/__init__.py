"""samplerd: Python client of the samplerd entropy-adaptive sampling service (samplerd.v1.Sampler over gRPC).

    import samplerd
    with samplerd.Client("localhost:50051") as client:
        session = client.session("req-1", seed=42, profile="entropix")
        r = session.step(logits, attention)      # numpy / torch, float32 / float16 / bfloat16, CPU
        print(r.token, r.regime.name, r.applied.temperature, r.metrics.logits_entropy)

`AsyncClient` is the asyncio variant. The generated stubs are `samplerd.v1.sampler_pb2` / `sampler_pb2_grpc` /
`profile_pb2`.
"""
from samplerd import _gen

_gen.ensure_stubs()

from samplerd._common import DEFAULT_MAX_RECENT, TLS  # noqa: E402
from samplerd.aio import AsyncClient, AsyncSession  # noqa: E402
from samplerd.calibration import Calibration, CalibrationError, calibrate  # noqa: E402
from samplerd.client import Client, Session  # noqa: E402
from samplerd.tensors import Raw  # noqa: E402
from samplerd.types import (BatchError, Metrics, Params, ProtocolError, Regime, SamplerdError,  # noqa: E402
                            StepError, StepResult, TokenLogprob, Unavailable)
from samplerd.v1 import profile_pb2, sampler_pb2, sampler_pb2_grpc  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Client", "Session", "AsyncClient", "AsyncSession", "StepResult", "Params", "Metrics", "Regime",
           "TokenLogprob", "TLS", "Raw", "SamplerdError", "StepError", "BatchError", "Unavailable",
           "ProtocolError", "DEFAULT_MAX_RECENT", "calibrate", "Calibration", "CalibrationError", "sampler_pb2", "sampler_pb2_grpc", "profile_pb2"]
