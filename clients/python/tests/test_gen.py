"""Stub generation (samplerd._gen): what pip's build hook and the first import in a checkout run."""
import os

from conftest import REPO
from samplerd import _gen


def test_generate_writes_every_stub_and_staleness_follows_the_protos(tmp_path):
    written = {p.name for p in _gen.generate(REPO / "proto", tmp_path)}
    assert set(_gen.STUBS) <= written and "sampler_pb2.pyi" in written
    text = (tmp_path / "samplerd" / "v1" / "sampler_pb2_grpc.py").read_text()
    assert "class SamplerStub" in text and "/samplerd.v1.Sampler/Sample" in text
    assert not _gen.stubs_stale(REPO / "proto", tmp_path)
    # Older than the newest .proto (not than now: a checkout's protos may be hours old).
    old = max((REPO / "proto" / p).stat().st_mtime for p in _gen.PROTOS) - 3600
    for s in _gen.STUBS:
        os.utime(tmp_path / "samplerd" / "v1" / s, (old, old))
    assert _gen.stubs_stale(REPO / "proto", tmp_path)
    (tmp_path / "samplerd" / "v1" / "profile_pb2.py").unlink()
    assert _gen.stubs_stale(REPO / "proto", tmp_path)
