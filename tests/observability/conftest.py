"""A real samplerd for the observability tests: started on loopback ports (port 0), its addresses read from the
lines it prints, killed after the module. SAMPLERD_BIN names the binary (default: build/service/samplerd)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))


class Samplerd:
    def __init__(self, *extra: str):
        binary = os.environ.get("SAMPLERD_BIN", os.path.join(ROOT, "build", "service", "samplerd"))
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.target = self.metrics = None
        deadline = time.monotonic() + 30
        while (self.target is None or self.metrics is None) and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("samplerd listening on "):
                self.target = line.split()[-1]
            elif line.startswith("samplerd metrics on "):
                self.metrics = line.split()[-1]
        if self.target is None or self.metrics is None:
            self.stop()
            raise RuntimeError(f"{binary} did not print its addresses")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{self.metrics}{path}", timeout=10) as r:
            return r.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def samplerd():
    server = Samplerd()
    yield server
    server.stop()
