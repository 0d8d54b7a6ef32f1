"""Stub generation (samplerd._gen): what the sdist and wheel build hooks run, and the copies kept in git."""
from conftest import REPO
from samplerd import _gen

PACKAGE_PARENT = REPO / "clients" / "python"


def test_generate_writes_every_stub(tmp_path):
    written = {p.name for p in _gen.generate(REPO / "proto", tmp_path)}
    assert set(_gen.STUBS) <= written and "sampler_pb2.pyi" in written
    assert _gen.stubs_present(tmp_path)
    text = (tmp_path / "samplerd" / "v1" / "sampler_pb2_grpc.py").read_text()
    assert "class SamplerStub" in text and "/samplerd.v1.Sampler/Sample" in text


def test_stubs_in_git_are_what_proto_generates(tmp_path):
    """A .proto edited without `python3 clients/python/samplerd/_gen.py` fails here."""
    fresh = _gen.generate(REPO / "proto", tmp_path)
    for f in fresh:
        kept = PACKAGE_PARENT / "samplerd" / "v1" / f.name
        assert kept.is_file(), f"{kept} is missing: run python3 clients/python/samplerd/_gen.py"
        assert kept.read_bytes() == f.read_bytes(), f"{kept} is stale: run python3 clients/python/samplerd/_gen.py"


def test_importing_the_package_generates_nothing(tmp_path):
    """A copy of the package without stubs fails to import (naming the module) instead of running protoc."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(
        PACKAGE_PARENT / "samplerd", tmp_path / "samplerd", ignore=shutil.ignore_patterns("*_pb2*", "__pycache__")
    )
    done = subprocess.run(
        [sys.executable, "-c", "import samplerd"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode != 0
    assert "sampler_pb2" in done.stderr or "profile_pb2" in done.stderr
    assert not list((tmp_path / "samplerd" / "v1").glob("*_pb2*"))
