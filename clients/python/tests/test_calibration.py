"""samplerd.calibrate: the documented method on a hand-computed record, its agreement with `samplerctl calibrate`
on the same record (both formats), the output loaded by a running samplerd, and bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

import samplerd
from conftest import REPO, samplerd_binary


def samplerctl_binary() -> Path:
    b = Path(os.environ.get("SAMPLERCTL_BIN", samplerd_binary().parents[1] / "clients" / "cpp" / "samplerctl"))
    if not os.access(b, os.X_OK):
        raise RuntimeError(f"samplerctl binary not found at {b} (build it, or set $SAMPLERCTL_BIN)")
    return b


def base_profiles(client) -> dict:
    return {p.name: p for p in client.list_profiles().profiles}


def write_jsonl(path: Path, metrics: list) -> Path:
    with open(path, "w") as f:
        f.write(json.dumps({"kind": "header", "profile": "greedy"}) + "\n")
        for m in metrics:
            f.write(json.dumps({"kind": "step", "token": 1, "metrics": m}) + "\n")
        f.write(json.dumps({"kind": "summary"}) + "\n")
    return path


FIVE = [
    {"logits_entropy": e, "logits_varentropy": v}
    for e, v in [(0.3, 3.0), (0.5, 5.0), (0.1, 1.0), (0.4, 4.0), (0.2, 2.0)]
]


def bounds(profile) -> dict:
    return {
        (samplerd.profile_pb2.Regime.Name(r.regime), samplerd.profile_pb2.Metric.Name(b.metric)): b.value
        for r in profile.regimes
        for b in r.bounds
    }


def test_quantile_interpolates_between_order_statistics():
    from samplerd.calibration import quantile

    assert quantile([3, 1, 2, 4, 5], 0.25) == 2.0
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10, 0], 0.9) == 9.0


def test_bounds_equal_hand_computed_quantiles(client):
    c = samplerd.calibrate(FIVE, base_profiles(client)["entropix"], quantile_low=0.25, quantile_high=0.75)
    b = bounds(c.profile_set.profiles[0])
    # entropy 0.1 / 3 / 5 -> quantiles 0.25 / 0.5 / 0.75 of 0.1..0.5; varentropy 0.1 / 5 -> 0.25 / 0.75 of 1..5
    assert b[("REGIME_ARGMAX", "METRIC_LOGITS_ENTROPY")] == 0.2
    assert b[("REGIME_CLARIFY", "METRIC_LOGITS_ENTROPY")] == 0.3
    assert b[("REGIME_RESAMPLE", "METRIC_LOGITS_ENTROPY")] == 0.4
    assert b[("REGIME_ARGMAX", "METRIC_LOGITS_VARENTROPY")] == 2.0
    assert b[("REGIME_EXPLORE", "METRIC_LOGITS_VARENTROPY")] == 4.0
    assert c.steps == 5
    assert abs(c.adaptive_temperature_max - 1.0) < 1e-12


def run_samplerctl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(samplerctl_binary()), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("base", ["entropix", "entropix-frog"])
def test_python_and_samplerctl_give_the_same_profile_on_a_recording(server, client, tmp_path, base):
    rec = tmp_path / "gen.rec"
    p = run_samplerctl("--target", server.address, "record", "--out", str(rec), "--steps", "40", "--sequences", "3")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "cpp.json"
    p = run_samplerctl(
        "calibrate",
        "--from",
        str(rec),
        "--base",
        base,
        "--out",
        str(out),
        "--quantile-low",
        "0.3",
        "--temperature-max",
        "1.2",
    )
    assert p.returncode == 0, p.stderr
    cpp = json_format.Parse(out.read_text(), samplerd.profile_pb2.ProfileSet())
    py = samplerd.calibrate(str(rec), base_profiles(client)[base], quantile_low=0.3, temperature_max=1.2)
    assert py.steps == 120 and py.attention_steps == 120
    assert cpp == py.profile_set
    assert bounds(cpp.profiles[0]) != bounds(base_profiles(client)[base])


def test_python_and_samplerctl_agree_on_json_lines(client, tmp_path):
    rec = write_jsonl(
        tmp_path / "gen.jsonl", FIVE + [{"logits_entropy": 0.05, "logits_varentropy": 0.7, "attn_entropy": None}]
    )
    out = tmp_path / "cpp.json"
    p = run_samplerctl("calibrate", "--from", str(rec), "--out", str(out))
    assert p.returncode == 0, p.stderr
    cpp = json_format.Parse(out.read_text(), samplerd.profile_pb2.ProfileSet())
    assert cpp == samplerd.calibrate(str(rec), base_profiles(client)["entropix"]).profile_set


def test_the_output_loads_into_a_running_server_on_sighup(spawn, tmp_path):
    config = tmp_path / "profiles.json"
    config.write_text("{}")
    srv = spawn(extra=("--config", str(config)))
    with samplerd.Client(srv.address) as c:
        assert "calibrated" not in base_profiles(c)
        rec = write_jsonl(tmp_path / "gen.jsonl", FIVE)
        p = run_samplerctl("calibrate", "--from", str(rec), "--out", str(config))
        assert p.returncode == 0, p.stderr
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "calibrated" not in base_profiles(c) and time.monotonic() < deadline:
            time.sleep(0.1)
        loaded = base_profiles(c)["calibrated"]
        assert bounds(loaded)[("REGIME_ARGMAX", "METRIC_LOGITS_ENTROPY")] == 0.3  # median of 0.1..0.5
        r = c.session("cal", seed=1, profile="calibrated").step(np.array([0.0, 5.0, 1.0], dtype=np.float32))
        assert r.regime is not None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no steps: the record is empty"),
        (b"samplerd-rec-v1\n", "no steps: the record is empty"),
        (b'{"kind": "step", "metrics": {}}\n{"kind": "step"}\n', "none of the 2 steps carries metrics"),
    ],
)
def test_bad_records_are_refused_naming_the_problem(client, tmp_path, content, message):
    rec = tmp_path / "bad.rec"
    rec.write_bytes(content)
    with pytest.raises(samplerd.CalibrationError, match=message):
        samplerd.calibrate(str(rec), base_profiles(client)["entropix"])
    p = run_samplerctl("calibrate", "--from", str(rec), "--out", str(tmp_path / "out.json"))
    assert p.returncode == 2
    assert message in p.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("q", [0.0, 1.0, 1.5, -0.2])
def test_quantiles_outside_the_open_unit_interval_are_refused(client, tmp_path, q):
    with pytest.raises(samplerd.CalibrationError, match=r"quantile_low: the quantile must be in \(0, 1\)"):
        samplerd.calibrate(FIVE, base_profiles(client)["entropix"], quantile_low=q)
    rec = write_jsonl(tmp_path / "gen.jsonl", FIVE)
    p = run_samplerctl("calibrate", "--from", str(rec), "--out", str(tmp_path / "o.json"), "--quantile-low", str(q))
    assert p.returncode == 2
    assert "quantile_low: the quantile must be in (0, 1)" in p.stderr


def test_a_truncated_recording_is_refused(client, tmp_path):
    rec = tmp_path / "t.rec"
    rec.write_bytes(b"samplerd-rec-v1\n\x05ab")
    with pytest.raises(samplerd.CalibrationError, match="request 0 is truncated"):
        samplerd.calibrate(str(rec), base_profiles(client)["entropix"])
    p = run_samplerctl("calibrate", "--from", str(rec), "--out", str(tmp_path / "o.json"))
    assert p.returncode == 2 and "request 0 is truncated" in p.stderr
