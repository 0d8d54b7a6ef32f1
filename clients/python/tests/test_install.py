"""`pip install` builds the stubs from proto/ (no generated file in the source) and the installed package works
offline on Debian's grpcio/protobuf/numpy."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SRC = REPO / "clients" / "python"


def test_pip_install_generates_stubs_and_serves_a_step(server, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(SRC / name, src / name)
    shutil.copytree(SRC / "samplerd", src / "samplerd",
                    ignore=shutil.ignore_patterns("*_pb2*.py*", "__pycache__", ".gen-*"))
    assert not list((src / "samplerd" / "v1").glob("*_pb2*"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    env = dict(os.environ, SAMPLERD_PROTO_DIR=str(REPO / "proto"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-build-isolation", "--no-index", str(src)], check=True, env=env)
    code = ("import numpy as np, samplerd; "
            "assert 'site-packages' in samplerd.__file__, samplerd.__file__; "
            f"c = samplerd.Client({server.address!r}); "
            "r = c.session('installed', seed=1).step(np.zeros(100, np.float32)); "
            "print(r.regime.name, samplerd.sampler_pb2.__file__)")
    env.pop("SAMPLERD_PROTO_DIR")
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, cwd=tmp_path, env=env,
                         capture_output=True, text=True).stdout
    regime, stub = out.split()
    assert regime == "CLARIFY"  # uniform logits
    assert Path(stub).is_file() and "site-packages" in stub
