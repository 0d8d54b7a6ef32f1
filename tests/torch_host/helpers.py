"""Shared helpers of the torch host tests: paths, PNG validation, the tiny model and the live samplerd."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import zlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HOST_DIR = os.path.join(REPO, "examples", "torch_host")
if HOST_DIR not in sys.path:
    sys.path.insert(0, HOST_DIR)

PYTHON = sys.executable
# The tiny model: 2 layers so that the attention tensor really stacks layers; a context of 32 so that a
# generation of 48 bytes after a short prompt fills the KV window and the cap on kv_len is exercised.
TINY = {"layers": 2, "heads": 2, "d_model": 32, "context": 32}
TRAIN_SECONDS = float(os.environ.get("TORCH_HOST_TRAIN_SECONDS", "6"))


def check_png(path: str, min_size: int = 100) -> tuple[int, int]:
    """Asserts that `path` is a complete, valid PNG (signature, every chunk's CRC, IHDR first, IEND last, the
    image data decompresses to the size IHDR implies) that is not a blank canvas; returns (width, height)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path}: not a PNG signature")
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        if pos + 12 > len(data):
            raise AssertionError(f"{path}: truncated chunk at {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise AssertionError(f"{path}: bad CRC in chunk {ctype!r}")
        chunks.append(ctype)
        if ctype == b"IDAT":
            idat += body
        pos += 12 + length
    if chunks[0] != b"IHDR" or chunks[-1] != b"IEND" or b"IDAT" not in chunks:
        raise AssertionError(f"{path}: chunk order {chunks[:3]}...{chunks[-2:]}")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    if width < min_size or height < min_size:
        raise AssertionError(f"{path}: {width}x{height} is too small for a chart")
    raw = zlib.decompress(idat)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    stride = (width * channels * depth + 7) // 8
    if len(raw) != height * (stride + 1):
        raise AssertionError(f"{path}: image data {len(raw)} bytes, expected {height * (stride + 1)}")
    from PIL import Image  # Debian's python3-pil (a dependency of python3-matplotlib)

    with Image.open(path) as im:
        im.load()
        lo, hi = im.convert("L").getextrema()
    if hi - lo < 50:
        raise AssertionError(f"{path}: blank image (grey levels {lo}..{hi})")
    return width, height


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\n" f"stderr:\n{p.stderr[-3000:]}"
        )
    return p


_state: dict = {}


def tiny_checkpoint() -> str:
    """Trains the tiny model once per test process (a few seconds) through train.py, the real CLI."""
    if "checkpoint" not in _state:
        d = tempfile.mkdtemp(prefix="torch-host-test-")
        path = os.path.join(d, "tiny.pt")
        p = run(
            [
                PYTHON,
                os.path.join(HOST_DIR, "train.py"),
                "--out",
                path,
                "--max-seconds",
                str(TRAIN_SECONDS),
                "--steps",
                "100000",
                "--eval-every",
                "0",
                "--layers",
                str(TINY["layers"]),
                "--heads",
                str(TINY["heads"]),
                "--d-model",
                str(TINY["d_model"]),
                "--context",
                str(TINY["context"]),
            ]
        )
        _state["checkpoint"] = path
        _state["train_stderr"] = p.stderr
    return _state["checkpoint"]


def samplerd_target() -> str:
    """$SAMPLERD_TARGET (scripts/test-torch-host.sh starts one), else a private samplerd from $SAMPLERD_BIN or
    build/service/samplerd. No server is a failure, not a skip."""
    if "target" not in _state:
        target = os.environ.get("SAMPLERD_TARGET")
        if not target:
            import local_server

            server = local_server.LocalSamplerd().start()
            _state["server"] = server
            target = server.target
        _state["target"] = target
    return _state["target"]


def stop_private_server() -> None:
    server = _state.pop("server", None)
    if server is not None:
        code = server.stop()
        _state.pop("target", None)
        if code != 0:
            raise AssertionError(f"samplerd exited {code} on SIGTERM (expected 0)")
