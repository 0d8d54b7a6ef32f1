"""The host's side of the samplerd connection, in one place.

Everything goes through the project's Python client (`samplerd`, clients/python: one shared `Sample` stream,
sessions that own the step index, seed and recent tokens). This module only adapts its results to the plain
dicts that generate.py records and plots (regime names without the `REGIME_` prefix, metrics and applied
parameters as dicts, timings), so that the rest of the example does not depend on the client's classes.

If the client package is not importable (an installation without clients/python), a fallback talks to the server
with stubs generated at run time from proto/; `link.kind` says which one is in use.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
_CLIENT_DIR = os.path.normpath(os.path.join(_HERE, "..", "..", "clients", "python"))
if os.path.isdir(_CLIENT_DIR) and _CLIENT_DIR not in sys.path:
    sys.path.insert(0, _CLIENT_DIR)

VALID_REGIMES = ("ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE", "FIXED")
PARAM_NAMES = ("temperature", "top_k", "top_p", "min_p")


@dataclass
class Outcome:
    token: int
    logprob: float
    regime: str
    applied: dict
    metrics: dict
    server_micros: int
    seconds: float  # wall time of the call, client side
    top: list = field(default_factory=list)


def _short(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


class _ClientLink:
    """Through the project's Python client."""

    kind = "client"

    def __init__(self, target: str):
        import samplerd

        self.client = samplerd.Client(target)

    def list_profiles(self) -> tuple[dict, str]:
        from google.protobuf.json_format import MessageToDict

        resp = self.client.list_profiles()
        profiles = {p.name: MessageToDict(p, preserving_proto_field_name=True) for p in resp.profiles}
        return profiles, resp.default_profile

    def session(
        self, sequence_id: str, seed: int, profile: str, params: dict | None, recent: list[int], max_recent: int
    ) -> "_ClientSession":
        return _ClientSession(
            self.client.session(
                sequence_id,
                seed=seed,
                profile=profile,
                params=params or None,
                recent_tokens=recent,
                max_recent=max_recent,
            )
        )

    def close(self) -> None:
        self.client.close()


class _ClientSession:
    def __init__(self, session):
        self.session = session

    def step(self, logits, attention=None) -> Outcome:
        t0 = time.perf_counter()
        r = self.session.step(logits, attention)  # raises samplerd.StepError if the server rejects the step
        dt = time.perf_counter() - t0
        return Outcome(
            token=r.token,
            logprob=r.logprob,
            regime=r.regime.name,
            applied={p: getattr(r.applied, p) for p in PARAM_NAMES},
            metrics=dataclasses.asdict(r.metrics),
            server_micros=r.server_micros,
            seconds=dt,
        )


class _RawLink:
    """Fallback for when the `samplerd` Python client is not importable: stubs generated at run time from
    proto/ with protoc and grpc_python_plugin (both from Debian). Same behaviour, fewer conveniences."""

    kind = "raw-stubs"

    def __init__(self, target: str):
        import subprocess
        import tempfile

        import grpc

        proto_dir = os.path.normpath(os.path.join(_HERE, "..", "..", "proto"))
        out = tempfile.mkdtemp(prefix="samplerd-stubs-")
        protos = [os.path.join("samplerd", "v1", p) for p in ("profile.proto", "sampler.proto")]
        subprocess.run(
            [
                "protoc",
                f"-I{proto_dir}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                *protos,
            ],
            check=True,
        )
        for d in ("samplerd", os.path.join("samplerd", "v1")):
            open(os.path.join(out, d, "__init__.py"), "a").close()
        sys.path.insert(0, out)
        from samplerd.v1 import sampler_pb2, sampler_pb2_grpc, profile_pb2  # noqa: F401

        self.pb, self.ppb = sampler_pb2, profile_pb2
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = sampler_pb2_grpc.SamplerStub(self.channel)

    def list_profiles(self) -> tuple[dict, str]:
        from google.protobuf.json_format import MessageToDict

        resp = self.stub.ListProfiles(self.pb.ListProfilesRequest(), timeout=10)
        profiles = {p.name: MessageToDict(p, preserving_proto_field_name=True) for p in resp.profiles}
        return profiles, resp.default_profile

    def session(
        self, sequence_id: str, seed: int, profile: str, params: dict | None, recent: list[int], max_recent: int
    ) -> "_RawSession":
        return _RawSession(self, sequence_id, seed, profile, params or {}, recent, max_recent)

    def close(self) -> None:
        self.channel.close()


class _RawSession:
    def __init__(self, link: _RawLink, sequence_id, seed, profile, params, recent, max_recent):
        self.link, self.sequence_id, self.seed, self.profile = link, sequence_id, seed, profile
        self.params = link.ppb.SamplingParams(**params)
        self.recent = list(recent)[-max_recent:]
        self.max_recent = max_recent
        self.step_index = 0

    @staticmethod
    def _tensor(pb, arr):
        import numpy as np

        a = np.ascontiguousarray(arr, dtype="<f4")
        return pb.Tensor(dtype=pb.DTYPE_F32, shape=list(a.shape), data=a.tobytes())

    def step(self, logits, attention=None) -> Outcome:
        pb = self.link.pb
        st = pb.Step(
            sequence_id=self.sequence_id,
            step=self.step_index,
            logits=self._tensor(pb, logits),
            recent_tokens=self.recent,
            profile=self.profile,
            seed=self.seed,
        )
        st.params.CopyFrom(self.params)
        if attention is not None:
            st.attention.CopyFrom(self._tensor(pb, attention))
        t0 = time.perf_counter()
        r = self.link.stub.SampleOnce(pb.SampleRequest(steps=[st]), timeout=30).results[0]
        dt = time.perf_counter() - t0
        if r.HasField("error"):
            raise RuntimeError(f"samplerd rejected step {self.step_index}: {r.error.field}: {r.error.message}")
        metrics = {
            f.name: (getattr(r.metrics, f.name) if r.metrics.HasField(f.name) else None)
            for f in r.metrics.DESCRIPTOR.fields
        }
        applied = {p: (getattr(r.applied, p) if r.applied.HasField(p) else None) for p in PARAM_NAMES}
        self.step_index += 1
        self.recent = (self.recent + [r.token])[-self.max_recent :]
        return Outcome(
            token=r.token,
            logprob=r.logprob,
            regime=_short(self.link.ppb.Regime.Name(r.regime), "REGIME_"),
            applied=applied,
            metrics=metrics,
            server_micros=r.server_micros,
            seconds=dt,
        )


def connect(target: str):
    """A link to samplerd at `target` (host:port or unix:/path): the Python client when it is importable."""
    try:
        import samplerd as _probe

        del _probe
    except ImportError as e:
        for name in [m for m in sys.modules if m == "samplerd" or m.startswith("samplerd.")]:
            del sys.modules[name]
        print(
            f"sampler_link: the samplerd Python client is not importable ({e}); using stubs generated from " "proto/",
            file=sys.stderr,
        )
        return _RawLink(target)
    return _ClientLink(target)
