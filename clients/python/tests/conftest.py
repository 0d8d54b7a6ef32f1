"""Fixtures: live samplerd processes. The binary is $SAMPLERD_BIN, else build/service/samplerd of this checkout;
a missing binary fails the tests (it never skips them)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "clients" / "python"))  # the source tree, unless an installed copy comes first
# The golden vectors: $SAMPLERD_GOLDEN_DIR (scripts/test-clients.sh passes the build's setting), else tests/golden.
GOLDEN = Path(os.environ.get("SAMPLERD_GOLDEN_DIR") or REPO / "tests" / "golden")


def samplerd_binary() -> Path:
    b = Path(os.environ.get("SAMPLERD_BIN", REPO / "build" / "service" / "samplerd"))
    if not os.access(b, os.X_OK):
        raise RuntimeError(f"samplerd binary not found at {b} (build it, or set $SAMPLERD_BIN)")
    return b


class Samplerd:
    """One samplerd process. `addresses` are the real listen addresses it printed (port 0 resolved)."""

    def __init__(self, *listen: str, extra: tuple = ()):
        self.log = tempfile.NamedTemporaryFile(prefix="samplerd-", suffix=".log", delete=False)
        cmd = [str(samplerd_binary()), "--log_level", "warn", *extra]
        for a in listen or ("127.0.0.1:0",):
            cmd += ["--listen", a]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.addresses = self._wait_listening(len(listen or (1,)))

    def _wait_listening(self, n: int, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            found = re.findall(r"samplerd listening on (\S+)", text)
            if len(found) >= n:
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"samplerd exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise RuntimeError(f"samplerd did not report {n} listen addresses within {timeout} s")

    @property
    def address(self) -> str:
        return self.addresses[0]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> int:
        self.kill(signal.SIGTERM)
        os.unlink(self.log.name)
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    s = Samplerd("127.0.0.1:0")
    yield s
    assert s.stop() == 0, "samplerd did not exit 0 on SIGTERM"


@pytest.fixture
def spawn():
    """Starts extra servers for one test and kills whatever is left at its end."""
    started: list[Samplerd] = []

    def start(*listen: str, extra: tuple = ()) -> Samplerd:
        s = Samplerd(*listen, extra=extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()
        try:
            os.unlink(s.log.name)
        except FileNotFoundError:
            pass


@pytest.fixture
def sock_dir() -> Path:
    """A fresh directory for unix sockets, under /tmp: a socket's path must fit in sun_path (107 bytes), which a long
    $TMPDIR (pytest's tmp_path lives under it) does not leave room for."""
    d = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(server):
    import samplerd

    with samplerd.Client(server.address) as c:
        yield c
