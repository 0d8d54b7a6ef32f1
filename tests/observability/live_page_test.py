"""The live page in a real browser: steps of two profiles are sent to a real samplerd, headless Chromium opens
the page, and the screenshot must show dots of at least two regime colours; the page's data endpoint must count
exactly the steps sent, by profile and regime.

    SAMPLERD_BIN=build/service/samplerd /usr/bin/python3 -m pytest -q tests/observability/live_page_test.py

LIVE_PAGE_SCREENSHOT=path keeps the screenshot (docs/live-page.png is made this way).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

import samplerd as sd

# live.js's colours; only the dots are painted in them at full opacity.
COLORS = {
    "argmax": (0x1F, 0x77, 0xB4),
    "clarify": (0x94, 0x67, 0xBD),
    "explore": (0x2C, 0xA0, 0x2C),
    "resample": (0xD6, 0x27, 0x28),
    "adaptive": (0xFF, 0x7F, 0x0E),
    "fixed": (0x7F, 0x7F, 0x7F),
}
VOCAB = 2048
BATCH = 50


def logits_spread(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Logits from nearly one-hot to nearly flat (and a few two-peaked), so steps land in several regimes."""
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:  # one clear winner: low entropy, low varentropy
            x = rng.normal(0, 1, VOCAB).astype(np.float32)
            x[rng.integers(VOCAB)] += rng.uniform(14, 25)
        elif kind == 1:  # broad: high entropy
            x = rng.normal(0, rng.uniform(0.2, 2.5), VOCAB).astype(np.float32)
        else:  # a few candidates over a long tail: middling entropy, high varentropy
            x = rng.normal(0, 1, VOCAB).astype(np.float32)
            x[rng.integers(VOCAB, size=rng.integers(2, 6))] += rng.uniform(5, 12)
        out.append(x)
    return out


def drive(server, profile: str, steps: int, seed: int) -> collections.Counter:
    """Sends `steps` steps under `profile` in batches; returns the regimes answered."""
    rng = np.random.default_rng(seed)
    regimes: collections.Counter = collections.Counter()
    with sd.Client(server.target) as client:
        sessions = [client.session(profile=profile, seed=1 + k) for k in range(BATCH)]
        sent = 0
        while sent < steps:
            n = min(BATCH, steps - sent)
            results = client.sample_batch(list(zip(sessions[:n], logits_spread(rng, n))), timeout=30)
            for r in results:
                assert r.profile == profile
                regimes[r.regime.name.lower()] += 1
            sent += n
    return regimes


def screenshot(url: str, path: str) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (scripts/install-deps.sh installs it)"
    with tempfile.TemporaryDirectory(prefix="samplerd-chromium-") as profile_dir:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile_dir}",
            "--window-size=1840,600",
            # virtual time runs the page's timers (a few refreshes) without waiting in real time
            "--virtual-time-budget=4000",
            f"--screenshot={path}",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and os.path.exists(path), f"chromium failed: {done.stderr[-2000:]}"


def colour_pixels(path: str) -> dict[str, int]:
    """For each regime colour, the pixels of dot interiors: within 6 of the colour on every channel, and so are
    their 8 neighbours (antialiased text has grey pixels near the fixed colour, but not 3x3 blocks of them)."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    counts = {}
    for name, rgb in COLORS.items():
        m = np.abs(img - np.array(rgb, dtype=np.int16)).max(axis=2) <= 6
        inner = m[1:-1, 1:-1].copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                inner &= m[1 + dy : m.shape[0] - 1 + dy, 1 + dx : m.shape[1] - 1 + dx]
        counts[name] = int(inner.sum())
    return counts


def test_live_page_shows_the_steps_sent(samplerd, tmp_path):
    sent = {"entropix": drive(samplerd, "entropix", 300, seed=1), "fixed": drive(samplerd, "fixed", 200, seed=2)}
    assert sum(sent["entropix"].values()) == 300 and sum(sent["fixed"].values()) == 200
    assert len(sent["entropix"]) >= 2, f"the driver's logits should reach several regimes: {sent['entropix']}"

    data = json.loads(samplerd.get("/live/steps"))
    profiles = {p["name"]: p for p in data["profiles"]}
    for name, regimes in sent.items():
        assert profiles[name]["steps"] == sum(regimes.values())
        assert profiles[name]["counts"] == dict(regimes)
        assert len(profiles[name]["points"]) == sum(regimes.values())  # under the ring's 1,024
    assert profiles["entropix"]["rules"], "the regions come from the profile's bounds"

    page = samplerd.get("/").decode()
    assert "live.js" in page and "http" not in page.replace(samplerd.metrics, "")  # nothing from elsewhere

    path = os.environ.get("LIVE_PAGE_SCREENSHOT") or str(tmp_path / "live.png")
    screenshot(f"http://{samplerd.metrics}/", path)
    pixels = colour_pixels(path)
    drawn = {name for name, n in pixels.items() if n >= 20}
    expected = set(sent["entropix"]) | set(sent["fixed"])
    assert len(drawn) >= 2, f"dots of fewer than two regime colours in the screenshot: {pixels}"
    assert drawn <= expected, f"colours of regimes never answered: {drawn - expected} ({pixels})"
    assert "fixed" in drawn, pixels
