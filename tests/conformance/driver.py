#!/usr/bin/python3
"""The Python client's conformance driver: sends requests.json through `samplerd.Client` and writes one record
per answered step in the suite's canonical format (README.md).

    /usr/bin/python3 tests/conformance/driver.py --target 127.0.0.1:50051 --requests tests/conformance/requests.json \
        --golden tests/golden --out python.txt

With `--shm SOCKET` (the server's --shm_socket; --target then a unix: address of the same server) every request
goes over the shared-memory plane: an interceptor moves its tensors into a region with `samplerd.shm.to_refs`
(malformed tensors stay inline) and adds the session metadata. The driver sends one request at a time, so each
request may reuse the region from byte 0.
"""
import argparse
import collections
import json
import struct
import sys
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "clients" / "python"))
sys.path.insert(0, str(HERE))

import samplerd  # noqa: E402
from samplerd import shm  # noqa: E402
from samplerd.v1 import sampler_pb2 as pb  # noqa: E402
from scripted_model import step_inputs  # noqa: E402


def hexf(v):
    return "-" if v is None else "%08x" % struct.unpack("<I", struct.pack("<f", v))[0]


def intf(v):
    return "-" if v is None else str(v)


def record(rid, r):
    a, m = r.applied, r.metrics
    applied = [
        hexf(a.temperature),
        intf(a.top_k),
        hexf(a.top_p),
        hexf(a.min_p),
        hexf(a.repetition_penalty),
        hexf(a.frequency_penalty),
        hexf(a.presence_penalty),
        intf(a.n_adaptive_samples),
        intf(a.clarifying_token),
    ]
    metrics = [
        m.logits_entropy,
        m.logits_varentropy,
        m.attn_entropy,
        m.attn_varentropy,
        m.agreement,
        m.interaction_strength,
    ]
    return " ".join(
        [
            rid,
            f"step={r.step}",
            f"token={r.token}",
            f"regime={r.regime.name}",
            f"logprob={hexf(r.logprob)}",
            "applied=" + ",".join(applied),
            "metrics=" + ",".join(hexf(x) for x in metrics),
            "top=" + ",".join(f"{t.token}:{hexf(t.logprob)}" for t in r.top),
            f"seed={r.seed}",
            f"profile={r.profile}",
        ]
    )


def error_record(rid, e):
    return f"{rid} step={e.step} error={e.code.value[0]} field={e.field}"


def encode(values, dtype):
    if dtype == "f32":
        return values
    if dtype == "f16":
        h = values.astype(np.float16)
        assert np.array_equal(h.astype(np.float32), values), "value not exact in float16"
        return h
    bits = values.view(np.uint32)
    assert not (bits & 0xFFFF).any(), "value not exact in bfloat16"
    return samplerd.Raw.bf16((bits >> 16).astype(np.uint16), values.shape)


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class ShmInterceptor(grpc.StreamStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):
    """Sends every SampleRequest's tensors as references into `plane` (counted in `.references`)."""

    def __init__(self, plane: shm.Plane):
        self.plane = plane
        self.references = 0

    def _details(self, d):
        return _Details(
            d.method,
            d.timeout,
            tuple(d.metadata or ()) + self.plane.metadata,
            d.credentials,
            d.wait_for_ready,
            d.compression,
        )

    def _refs(self, request):
        if not isinstance(request, pb.SampleRequest):
            return request
        out = shm.to_refs(request, self.plane)
        self.references += sum(s.HasField("logits_ref") + s.HasField("attention_ref") for s in out.steps)
        return out

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), (self._refs(r) for r in request_iterator))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), self._refs(request))


def main():
    ap = argparse.ArgumentParser()
    for a in ("target", "requests", "golden", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--shm", help="the server's --shm_socket: send every request over the shared-memory plane")
    args = ap.parse_args()
    interceptors = ()
    if args.shm:
        plane = shm.Plane(args.shm, 64 << 20, "conformance-python")
        interceptors = (ShmInterceptor(plane),)
    doc = json.loads(Path(args.requests).read_text())
    golden_dir = Path(args.golden)
    cache = {}

    def load(f):
        if f not in cache:
            cache[f] = np.load(golden_dir / f)
        return cache[f]

    lines = []
    with samplerd.Client(args.target, interceptors=interceptors) as client:
        for g in doc["golden"]:
            logits = encode(load(g["logits"]), g["dtype"])
            attention = encode(load(g["attention"]), g["dtype"]) if g["attention"] else None
            s = client.session(
                g["id"],
                seed=int(g["seed"]),
                profile=g["profile"],
                params=g["params"],
                recent_tokens=g["recent_tokens"],
                top_logprobs=g["top_logprobs"],
            )
            try:
                lines.append(record(g["id"], s.step(logits, attention)))
            except samplerd.StepError as e:
                lines.append(error_record(g["id"], e))

        gen = doc["generation"]
        seqs = gen["sequences"]
        sessions = [
            client.session(
                q["id"], seed=int(q["seed"]), profile=q["profile"], params=q["params"], recent_tokens=q["prompt"]
            )
            for q in seqs
        ]
        prev = [q["prompt"][-1] for q in seqs]
        for t in range(gen["steps"]):
            dtype = gen["dtypes"][t % len(gen["dtypes"])]
            items = []
            for i, (s, q) in enumerate(zip(sessions, seqs)):
                logits, attention = step_inputs(
                    gen["vocab"], gen["layers"], gen["heads"], gen["kv_base"], q["salt"], t, prev[i]
                )
                items.append((s, encode(logits, dtype), encode(attention, dtype)))
            for i, r in enumerate(client.sample_batch(items)):
                lines.append(record(seqs[i]["id"], r))
                prev[i] = r.token
    if interceptors:
        # A driver that silently fell back to bytes would prove nothing about the plane.
        assert interceptors[0].references > 0, "no tensor was sent by reference"
        print(f"python: {interceptors[0].references} tensors sent by reference", file=sys.stderr)
        plane.close()
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
