"""The package as its users get it: an sdist built from the checkout (stubs generated from proto/ into it),
a wheel built from that sdist with `pip wheel` (no proto/, no protoc: the sdist's stubs), installed into a venv
made with --system-site-packages (Debian's grpcio/protobuf/numpy), offline. The README's install line is the
same commands."""
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from conftest import REPO

SRC = REPO / "clients" / "python"
PYTHON = "/usr/bin/python3"  # Debian's, whose grpcio/protobuf/numpy the venv sees


def test_wheel_from_sdist_installs_offline_and_serves_a_step(server, tmp_path):
    dist = tmp_path / "dist"
    # PEP 517's build_sdist hook, as `python3 -m build --sdist --no-isolation` calls it.
    subprocess.run(
        [PYTHON, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        cwd=SRC,
        check=True,
        capture_output=True,
    )
    (sdist,) = dist.glob("samplerd-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = t.getnames()
    for stub in ("sampler_pb2.py", "sampler_pb2_grpc.py", "profile_pb2.py", "sampler_pb2.pyi"):
        assert any(n.endswith(f"samplerd/v1/{stub}") for n in names), stub
    assert any(n.endswith("samplerd/py.typed") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    # No protoc on the way: the wheel's stubs come from the sdist.
    env = dict(
        os.environ,
        PROTOC="/nonexistent/protoc",
        GRPC_PYTHON_PLUGIN="/nonexistent/plugin",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("SAMPLERD_PROTO_DIR", None)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [*pip, "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(wheels), str(sdist)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("samplerd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "samplerd/v1/sampler_pb2_grpc.py" in names and "samplerd/py.typed" in names
    assert "Provides-Extra: plots" in metadata
    assert "matplotlib" in metadata.split("Provides-Extra: plots")[1]
    assert not any(
        line.startswith("Requires-Dist: matplotlib") and "extra" not in line for line in metadata.splitlines()
    )

    subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], check=True, env=env, cwd=tmp_path)
    code = (
        "import numpy as np, samplerd; "
        "assert 'site-packages' in samplerd.__file__, samplerd.__file__; "
        f"c = samplerd.Client({server.address!r}); "
        "r = c.session('installed', seed=1).step(np.zeros(100, np.float32)); "
        "print(r.regime.name, samplerd.sampler_pb2.__file__)"
    )
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], check=True, cwd=tmp_path, env=env, capture_output=True, text=True
    ).stdout
    regime, stub = out.split()
    assert regime == "CLARIFY"  # uniform logits
    assert Path(stub).is_file() and str(venv) in stub


def test_readme_install_line_works_in_a_system_site_packages_venv(tmp_path):
    """The README's Python install block, run as written (from the repository root), in a fresh venv."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- install-python -->")[1].split("```bash")[1].split("```")[0]
    venv = tmp_path / ".venv"
    script = block.replace(".venv", str(venv))
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, check=True, env=env)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import samplerd; print(samplerd.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in out
