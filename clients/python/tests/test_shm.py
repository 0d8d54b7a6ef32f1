"""samplerd.shm against a live samplerd with --shm_socket: regions registered over the control socket, steps
referencing numpy / torch tensors in a slot ring answered byte for byte as the same tensors sent as bytes, an
unsealed memfd refused with the reason, and the clean fallback to bytes for a TCP target or a missing socket."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import grpc
import numpy as np
import pytest
import torch

import samplerd
from samplerd import shm
from samplerd.v1 import sampler_pb2 as pb
from samplerd.v1 import sampler_pb2_grpc

VOCAB = 5000


@pytest.fixture
def shm_server(spawn, sock_dir):
    sock = str(sock_dir / "shm.sock")
    s = spawn(f"unix:{sock_dir}/grpc.sock", extra=("--shm_socket", sock))
    yield s, sock


def _request(rng: np.random.Generator) -> pb.SampleRequest:
    request = pb.SampleRequest()
    for i, dtype in enumerate((np.float32, np.float16, np.float32)):
        step = request.steps.add(sequence_id=f"s{i}", step=i, seed=7, top_logprobs=3)
        logits = (rng.standard_normal(VOCAB) * 2).astype(dtype)
        step.logits.CopyFrom(
            pb.Tensor(dtype=pb.DTYPE_F32 if dtype == np.float32 else pb.DTYPE_F16, shape=[VOCAB], data=logits.tobytes())
        )
        attention = (rng.standard_normal((2, 4, 32)) * 2).astype(np.float32)
        step.attention.CopyFrom(pb.Tensor(dtype=pb.DTYPE_F32, shape=[2, 4, 32], data=attention.tobytes()))
    return request


def _answer(stub, request, metadata=()) -> bytes:
    response = stub.SampleOnce(request, metadata=metadata)
    for r in response.results:
        r.server_micros = 0
    return response.SerializeToString()


def test_referenced_requests_answer_byte_for_byte_as_bytes(shm_server):
    server, sock = shm_server
    with shm.Plane(sock, 1 << 20, "pytest") as plane, grpc.insecure_channel(server.address) as channel:
        stub = sampler_pb2_grpc.SamplerStub(channel)
        request = _request(np.random.default_rng(1))
        refs = shm.to_refs(request, plane)
        assert all(s.HasField("logits_ref") and not s.HasField("logits") for s in refs.steps)
        assert len(plane.session) == 32 and len(plane.region) == 32
        by_ref = _answer(stub, refs, plane.metadata)
        assert by_ref == _answer(stub, request)
        assert not pb.SampleResponse.FromString(by_ref).results[0].HasField("error")


def test_slot_ring_numpy_views_and_torch_copies_answer_as_bytes(shm_server):
    server, sock = shm_server
    with shm.Plane(sock, 1 << 20) as plane, grpc.insecure_channel(server.address) as channel:
        stub = sampler_pb2_grpc.SamplerStub(channel)
        ring = shm.SlotRing(plane, VOCAB * 4)
        assert ring.count >= 4
        rng = np.random.default_rng(2)
        logits = (rng.standard_normal(VOCAB) * 2).astype(np.float32)
        # Written in place through a numpy view (no copy besides the host's own write).
        slot = ring.next()
        slot.array(np.float32, (VOCAB,))[:] = logits
        by_view = pb.SampleRequest(steps=[pb.Step(sequence_id="v", seed=3, logits_ref=slot.ref(np.float32, (VOCAB,)))])
        inline = pb.SampleRequest(
            steps=[
                pb.Step(
                    sequence_id="v", seed=3, logits=pb.Tensor(dtype=pb.DTYPE_F32, shape=[VOCAB], data=logits.tobytes())
                )
            ]
        )
        assert _answer(stub, by_view, plane.metadata) == _answer(stub, inline)
        # A torch bfloat16 tensor copied into the next slot.
        t = torch.from_numpy(logits).to(torch.bfloat16)
        ref = ring.next().write(t)
        assert ref.dtype == pb.DTYPE_BF16 and ref.offset == ring.slot_bytes
        by_torch = pb.SampleRequest(steps=[pb.Step(sequence_id="t", seed=3, logits_ref=ref)])
        inline_bf16 = pb.SampleRequest(
            steps=[
                pb.Step(
                    sequence_id="t",
                    seed=3,
                    logits=pb.Tensor(dtype=pb.DTYPE_BF16, shape=[VOCAB], data=t.view(torch.int16).numpy().tobytes()),
                )
            ]
        )
        assert _answer(stub, by_torch, plane.metadata) == _answer(stub, inline_bf16)


def test_bad_references_name_the_field(shm_server):
    server, sock = shm_server
    with shm.Plane(sock, 4096) as plane, grpc.insecure_channel(server.address) as channel:
        stub = sampler_pb2_grpc.SamplerStub(channel)
        out_of_bounds = pb.Step(sequence_id="x", logits_ref=plane.ref(2048, np.float32, (1000,)))
        misaligned = pb.Step(sequence_id="x", logits_ref=plane.ref(2, np.float32, (10,)))
        r = stub.SampleOnce(pb.SampleRequest(steps=[out_of_bounds, misaligned]), metadata=plane.metadata).results
        assert (r[0].error.code, r[0].error.field) == (3, "logits_ref.offset")
        assert "past the end" in r[0].error.message
        assert (r[1].error.code, r[1].error.field) == (3, "logits_ref.offset")
        no_session = stub.SampleOnce(pb.SampleRequest(steps=[misaligned])).results[0]
        assert no_session.error.field == "logits_ref.region"


def test_an_unsealed_memfd_is_refused_with_the_reason(shm_server):
    _, sock = shm_server
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sock)
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 4096)
    request = pb.ShmControlRequest()
    request.register.name = "unsealed"
    socket.send_fds(s, [request.SerializeToString()], [fd])
    response = pb.ShmControlResponse.FromString(s.recv(4096))
    assert response.code == 3
    assert "F_SEAL_SHRINK and F_SEAL_SEAL" in response.message
    assert response.region == ""
    s.close()
    os.close(fd)


def test_connect_falls_back_to_bytes_and_says_so(shm_server, caplog):
    server, sock = shm_server
    caplog.set_level(logging.WARNING, logger="samplerd.shm")
    assert shm.connect(sock, 4096, target="127.0.0.1:50051") is None
    assert "sending bytes" in caplog.text
    caplog.clear()
    assert shm.connect(sock + ".missing", 4096, target=server.address) is None
    assert "cannot connect" in caplog.text
    plane = shm.connect(sock, 4096, target=server.address)
    assert plane is not None
    plane.close()


def test_steps_on_the_control_socket_answer_byte_for_byte_as_the_rpc(shm_server):
    server, sock = shm_server
    with shm.Plane(sock, 1 << 20, "control") as plane, grpc.insecure_channel(server.address) as channel:
        stub = sampler_pb2_grpc.SamplerStub(channel)
        refs = shm.to_refs(_request(np.random.default_rng(3)), plane)
        # A rejected step travels as its own error, as on the RPC.
        refs.steps.add(sequence_id="bad", seed=7, logits_ref=plane.ref(2, np.float32, (10,)))
        response = plane.sample(refs)
        assert [r.error.field for r in response.results] == ["", "", "", "logits_ref.offset"]
        for r in response.results:
            r.server_micros = 0
        assert response.SerializeToString() == _answer(stub, refs, plane.metadata)
        # Over the control socket's packet size: the request is refused whole, the connection stays.
        over = pb.SampleRequest(steps=[refs.steps[0]] * 4000)
        with pytest.raises(shm.ShmError) as refused:
            plane.sample(over)
        assert refused.value.code == 8
        assert len(plane.sample(refs).results) == 4


def test_control_socket_steps_need_the_token_on_a_server_with_one(spawn, sock_dir):
    token_file = sock_dir / "token"
    token_file.write_text("pytest-token\n")
    sock = str(sock_dir / "shm.sock")
    spawn(f"unix:{sock_dir}/grpc.sock", extra=("--shm_socket", sock, "--auth_token_file", str(token_file)))
    request = pb.SampleRequest(
        steps=[pb.Step(sequence_id="a", seed=1, logits=pb.Tensor(dtype=pb.DTYPE_F32, shape=[4], data=bytes(16)))]
    )
    with pytest.raises(shm.ShmError) as refused:
        shm.Plane(sock, 4096)  # without a token a connection may not even register
    assert refused.value.code == 16
    with pytest.raises(shm.ShmError) as wrong:
        shm.Plane(sock, 4096, token="nope")
    assert wrong.value.code == 16
    with shm.Plane(sock, 4096, token="pytest-token") as holder:
        assert holder.sample(request).results[0].token in range(4)


def test_control_socket_steps_raise_unavailable_once_the_server_is_gone(shm_server):
    server, sock = shm_server
    request = pb.SampleRequest(
        steps=[pb.Step(sequence_id="a", seed=1, logits=pb.Tensor(dtype=pb.DTYPE_F32, shape=[4], data=bytes(16)))]
    )
    with shm.Plane(sock, 4096) as plane:
        assert len(plane.sample(request).results) == 1
        server.kill()
        with pytest.raises(shm.ShmError) as gone:
            plane.sample(request)
        assert gone.value.code == 14


def test_connect_to_a_hung_server_times_out_and_falls_back_to_bytes(shm_server, caplog):
    server, sock = shm_server
    caplog.set_level(logging.WARNING, logger="samplerd.shm")
    plane = shm.connect(sock, 4096, target=server.address, timeout=1)
    assert plane is not None
    got = {}

    def attempt():
        got["connect"] = shm.connect(sock, 4096, target=server.address, timeout=1)
        try:
            plane.sample(pb.SampleRequest())
        except shm.ShmError as e:
            got["sample"] = e

    os.kill(server.proc.pid, signal.SIGSTOP)  # a hung replica: its socket accepts, nothing answers
    try:
        t = threading.Thread(target=attempt, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "connect or sample still waiting for a hung server"
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert got["connect"] is None
    assert "no answer on the shared-memory socket within 1 s: sending bytes" in caplog.text
    assert got["sample"].code == 4
    with pytest.raises(shm.ShmError, match="closed"):
        plane.sample(pb.SampleRequest())  # a late answer cannot be taken for another request's
