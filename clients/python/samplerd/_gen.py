"""Generates the gRPC/protobuf stubs of samplerd.v1 from proto/ with `protoc` and `grpc_python_plugin`.

The stubs are build products, never edited by hand. They are made:
  - when the sdist or the wheel is built, by setup.py's build hooks (`pip install ./clients/python`,
    `pip wheel`), so both ship them; importing the package never generates anything;
  - for a source checkout (PYTHONPATH=clients/python), by hand with `python3 clients/python/samplerd/_gen.py`;
    the copies in git are those, and tests/test_gen.py fails when they differ from what proto/ generates.

Only the standard library is used here, so setup.py can load this file before grpcio or protobuf are present.
Tools: `protoc` (Debian: protobuf-compiler) and `grpc_python_plugin` (protobuf-compiler-grpc); $PROTOC and
$GRPC_PYTHON_PLUGIN override where they are looked up.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOS = ("samplerd/v1/profile.proto", "samplerd/v1/sampler.proto")
# grpc.health.v1's messages (the vendored proto/grpc/health/v1/health.proto), placed in samplerd/v1 as
# health_pb2: a top-level `grpc` package would shadow grpcio's. The descriptor keeps its canonical file name.
HEALTH_PROTO = "grpc/health/v1/health.proto"
STUBS = ("profile_pb2.py", "profile_pb2_grpc.py", "sampler_pb2.py", "sampler_pb2_grpc.py", "health_pb2.py")

_PACKAGE_DIR = Path(__file__).resolve().parent


def find_proto_dir() -> Path | None:
    """The folder holding samplerd/v1/*.proto: $SAMPLERD_PROTO_DIR, else the repository's proto/ when this file
    sits in a checkout (clients/python/samplerd/_gen.py), else a proto/ copied next to the package (sdist)."""
    candidates = []
    if os.environ.get("SAMPLERD_PROTO_DIR"):
        candidates.append(Path(os.environ["SAMPLERD_PROTO_DIR"]))
    if (_PACKAGE_DIR.parent / "pyproject.toml").is_file():  # a source tree, not site-packages
        candidates += [_PACKAGE_DIR.parents[2] / "proto", _PACKAGE_DIR.parent / "proto"]
    for c in candidates:
        if all((c / p).is_file() for p in PROTOS + (HEALTH_PROTO,)):
            return c
    return None


def _tool(env: str, name: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise RuntimeError(
            f"samplerd: cannot generate the gRPC stubs: `{name}` not found (install Debian's "
            f"protobuf-compiler and protobuf-compiler-grpc, or set ${env})"
        )
    return path


def generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    """Writes samplerd/v1/{profile,sampler}_pb2{,_grpc}.py(i) and samplerd/v1/health_pb2.py(i) under `out_dir`
    (the folder that contains the `samplerd` package). Each file is replaced atomically, so concurrent generators and importers never see a
    half-written module."""
    protoc = _tool("PROTOC", "protoc")
    plugin = _tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin")
    target = Path(out_dir) / "samplerd" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gen-", dir=target) as tmp:
        cmd = [
            protoc,
            f"-I{proto_dir}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-grpc_python={plugin}",
            *PROTOS,
        ]
        health = [protoc, f"-I{proto_dir}", f"--python_out={tmp}", f"--pyi_out={tmp}", HEALTH_PROTO]
        for c in (cmd, health):
            done = subprocess.run(c, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"samplerd: protoc failed ({' '.join(c)}):\n{done.stderr}")
        generated = [
            *sorted((Path(tmp) / "samplerd" / "v1").iterdir()),
            *sorted((Path(tmp) / "grpc" / "health" / "v1").iterdir()),
        ]
        written = []
        for f in generated:
            os.replace(f, target / f.name)
            written.append(target / f.name)
    return written


def stubs_present(package_parent: Path) -> bool:
    """Whether every stub is under `package_parent`/samplerd/v1."""
    return all((Path(package_parent) / "samplerd" / "v1" / s).is_file() for s in STUBS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m samplerd._gen", description=__doc__.splitlines()[0])
    ap.add_argument("--proto-dir", type=Path, default=None, help="folder containing samplerd/v1/*.proto")
    ap.add_argument(
        "--out",
        type=Path,
        default=_PACKAGE_DIR.parent,
        help="folder containing the samplerd package (default: this package's parent)",
    )
    args = ap.parse_args(argv)
    proto_dir = args.proto_dir or find_proto_dir()
    if proto_dir is None:
        print("samplerd._gen: no proto/ folder found; pass --proto-dir", file=sys.stderr)
        return 2
    for p in generate(proto_dir, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
