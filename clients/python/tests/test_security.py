"""TLS and the bearer token, against an in-process stand-in server (grpcio) that records what it receives."""
import subprocess
from concurrent import futures

import grpc
import numpy as np
import pytest

import samplerd
from samplerd.v1 import sampler_pb2 as pb
from samplerd.v1 import sampler_pb2_grpc


class Recorder(sampler_pb2_grpc.SamplerServicer):
    def __init__(self):
        self.metadata = []

    def _answer(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.SampleResponse(
            results=[
                pb.StepResult(sequence_id=s.sequence_id, step=s.step, token=7, seed=s.seed or 1) for s in request.steps
            ]
        )

    def Sample(self, request_iterator, context):
        for request in request_iterator:
            yield self._answer(request, context)

    def SampleOnce(self, request, context):
        return self._answer(request, context)


def serve(creds=None):
    server = grpc.server(futures.ThreadPoolExecutor(4))
    rec = Recorder()
    sampler_pb2_grpc.add_SamplerServicer_to_server(rec, server)
    port = server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, rec, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=samplerd-test",
            "-addext",
            "subjectAltName=DNS:samplerd.test",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d


def test_token_is_sent_as_bearer_on_every_call():
    server, rec, address = serve()
    try:
        with samplerd.Client(address, token="s3cret") as c:
            s = c.session("t", seed=1)
            assert s.step(np.zeros(10, np.float32)).token == 7
            s.step(np.zeros(10, np.float32))
        assert rec.metadata and all(m.get("authorization") == "Bearer s3cret" for m in rec.metadata)
    finally:
        server.stop(0)


def test_no_token_no_header():
    server, rec, address = serve()
    try:
        with samplerd.Client(address) as c:
            c.session("t", seed=1).step(np.zeros(10, np.float32))
        assert rec.metadata and "authorization" not in rec.metadata[0]
    finally:
        server.stop(0)


def test_tls_with_private_ca_and_server_name(certs):
    creds = grpc.ssl_server_credentials([((certs / "key.pem").read_bytes(), (certs / "cert.pem").read_bytes())])
    server, rec, address = serve(creds)
    try:
        tls = samplerd.TLS(root_certificates=certs / "cert.pem", server_name="samplerd.test")
        with samplerd.Client(address, tls=tls, token="tok") as c:
            assert c.session("tls", seed=1).step(np.zeros(10, np.float32)).token == 7
        assert rec.metadata[-1]["authorization"] == "Bearer tok"
        # Without the CA the handshake fails, and the client reports it as unavailable.
        with samplerd.Client(address, tls=True, failover_timeout=0.5) as c:
            with pytest.raises(samplerd.Unavailable):
                c.session("tls", seed=1).step(np.zeros(10, np.float32))
    finally:
        server.stop(0)
