"""Starts a private samplerd on a free loopback port (for evaluate.py and the tests).

    with LocalSamplerd() as server:   # $SAMPLERD_BIN, else build/service/samplerd
        print(server.target)          # e.g. 127.0.0.1:40123
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

_REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
_LISTENING = re.compile(r"samplerd listening on (\S+)")


def default_binary() -> str:
    return os.environ.get("SAMPLERD_BIN") or os.path.join(_REPO, "build", "service", "samplerd")


class LocalSamplerd:
    def __init__(self, binary: str | None = None, extra_args: list[str] | None = None, timeout: float = 20.0):
        self.binary = binary or default_binary()
        self.extra_args = extra_args or []
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.target: str | None = None
        self.output: list[str] = []
        self.returncode: int | None = None

    def start(self) -> "LocalSamplerd":
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(f"samplerd binary not found at {self.binary} (build it or set SAMPLERD_BIN)")
        self.proc = subprocess.Popen(
            [self.binary, "--listen", "127.0.0.1:0", *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        found = threading.Event()

        def drain() -> None:  # keep reading so that the server never blocks on a full pipe
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                m = _LISTENING.search(line)
                if m and not found.is_set():
                    self.target = m.group(1)
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("samplerd did not report its address:\n" + "\n".join(self.output[-20:]))
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; returns the exit code (SIGKILL after `timeout`, then the code is negative)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return self.returncode

    def __enter__(self) -> "LocalSamplerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
