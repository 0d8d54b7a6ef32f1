"""Calibration: a profile fitted to a model from the metrics of its own generations.

The same documented method as core/calibration.h (and `samplerctl calibrate`), in pure Python, giving the same
profile bit for bit (tests/clients' python test compares them on one record):

  1. steps: those with logits entropy and varentropy; attention metrics count where a step has them;
  2. bounds: for each metric the base profile bounds, its distinct bound values in increasing order go to evenly
     spaced quantiles from `quantile_low` to `quantile_high` of that metric over the steps (one value: the
     middle); quantiles interpolate linearly between order statistics (numpy's default, type 7);
  3. temperature: ADAPTIVE's temperature coefficients are scaled by one factor s so that T (1 + s X) reaches
     `temperature_max` at the largest X of the steps; CLARIFY's and EXPLORE's caps become min(cap,
     temperature_max); RESAMPLE samples at temperature_max.

    import samplerd
    with samplerd.Client(target) as client:
        base = {p.name: p for p in client.list_profiles().profiles}["entropix"]
    c = samplerd.calibrate(["gen.rec", "more.jsonl"], base, quantile_low=0.5, quantile_high=0.9)
    open("profile.json", "w").write(c.json())     # samplerd --config profile.json
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from google.protobuf import json_format

from samplerd.types import METRIC_FIELDS
from samplerd.v1 import profile_pb2, sampler_pb2

# A metric enum's field in Metrics: METRIC_LOGITS_ENTROPY is logits_entropy.
_METRIC_BY_ENUM = {
    value.number: value.name[len("METRIC_") :].lower()
    for value in profile_pb2.Metric.DESCRIPTOR.values
    if value.name[len("METRIC_") :].lower() in METRIC_FIELDS
}
_RECORDING_HEADER = b"samplerd-rec-v1\n"


class CalibrationError(ValueError):
    """Bad input to a calibration (the message names the problem, as samplerctl's does)."""


@dataclass
class Calibration:
    profile_set: profile_pb2.ProfileSet
    steps: int
    steps_without_metrics: int
    attention_steps: int
    bounds: list = field(default_factory=list)  # (regime, metric, op, base value, quantile, value)
    temperature_scale: float = 1.0
    adaptive_temperature_min: float = 0.0
    adaptive_temperature_max: float = 0.0

    def json(self) -> str:
        """The ProfileSet in protobuf's JSON mapping: what `samplerd --config` loads."""
        return json_format.MessageToJson(self.profile_set)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (type 7): h = (n - 1) q, x_j + (h - j)(x_{j+1} - x_j)."""
    xs = sorted(float(v) for v in values)
    h = (len(xs) - 1) * q
    j = int(math.floor(h))
    if j + 1 >= len(xs):
        return xs[-1]
    return xs[j] + (h - j) * (xs[j + 1] - xs[j])


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CalibrationError("truncated length prefix")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _metrics_dict(m: sampler_pb2.Metrics) -> dict:
    return {f: (getattr(m, f) if m.HasField(f) else None) for f in METRIC_FIELDS}


def read_record(path: str) -> list[dict]:
    """The metrics of every step of a record: a `samplerctl record` file (every StepResult without an error) or
    JSON lines of the torch host (every line with "kind": "step"; absent metrics count as a step without)."""
    with open(path, "rb") as f:
        data = f.read()
    steps: list[dict] = []
    if data.startswith(_RECORDING_HEADER):
        pos, index = len(_RECORDING_HEADER), 0
        while pos < len(data):
            for kind in ("request", "response"):
                try:
                    n, pos = _read_varint(data, pos)
                except CalibrationError:
                    raise CalibrationError(f"{path}: {kind} {index} is truncated or unparseable") from None
                if pos + n > len(data):
                    raise CalibrationError(f"{path}: {kind} {index} is truncated or unparseable")
                if kind == "response":
                    resp = sampler_pb2.SampleResponse.FromString(data[pos : pos + n])
                    steps += [_metrics_dict(r.metrics) for r in resp.results if not r.HasField("error")]
                pos += n
            index += 1
        return steps
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise CalibrationError(f"{path}:{n}: not a JSON object")
        if obj.get("kind") != "step":
            continue
        m = obj.get("metrics") or {}
        for k in METRIC_FIELDS:
            v = m.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise CalibrationError(f"{path}:{n}: metrics.{k} is not a number")
        steps.append({k: (None if m.get(k) is None else float(m[k])) for k in METRIC_FIELDS})
    return steps


def _as_profile(base) -> profile_pb2.Profile:
    if isinstance(base, profile_pb2.Profile):
        return base
    if isinstance(base, Mapping):
        return json_format.ParseDict(base, profile_pb2.Profile())
    raise CalibrationError(
        "base: a resolved profile (profile_pb2.Profile or its dict, as ListProfiles returns " "it) is needed"
    )


def calibrate(
    steps: Union[str, Iterable],
    base,
    *,
    name: str = "calibrated",
    quantile_low: float = 0.5,
    quantile_high: float = 0.9,
    temperature_max: float = 1.0,
) -> Calibration:
    """Calibrates `base` (the resolved entropix or entropix-frog profile, as `Client.list_profiles()` returns it)
    to `steps`: record paths, or metrics (dicts or `samplerd.Metrics`). Raises CalibrationError naming the
    problem for an empty record, steps without metrics, a quantile outside (0, 1), and the rest of
    core/calibration.h's refusals."""
    for label, q in (("quantile_low", quantile_low), ("quantile_high", quantile_high)):
        if not (0 < q < 1):
            raise CalibrationError(f"{label}: the quantile must be in (0, 1), got {q}")
    if not quantile_low < quantile_high:
        raise CalibrationError(f"quantile_low ({quantile_low}) must be below quantile_high ({quantile_high})")
    if not name:
        raise CalibrationError("name: the profile name must not be empty")
    base = _as_profile(base)
    if base.default_regime != profile_pb2.REGIME_ADAPTIVE or not base.regimes:
        raise CalibrationError(f'base: "{base.name}" is not an adaptive profile (entropix or entropix-frog)')
    t = float(np.float32(base.params.temperature))
    if not (math.isfinite(temperature_max) and temperature_max >= t):
        raise CalibrationError(
            f"temperature_max: must be finite and at least the base temperature {t}, " f"got {temperature_max}"
        )

    if isinstance(steps, (str, os.PathLike)):
        steps = [steps]
    rows: list[dict] = []
    for s in steps:
        if isinstance(s, (str, os.PathLike)):
            rows += read_record(os.fspath(s))
        elif isinstance(s, Mapping):
            rows.append({k: s.get(k) for k in METRIC_FIELDS})
        else:
            rows.append({k: getattr(s, k, None) for k in METRIC_FIELDS})
    if not rows:
        raise CalibrationError("no steps: the record is empty")
    usable = [r for r in rows if r["logits_entropy"] is not None and r["logits_varentropy"] is not None]
    if not usable:
        raise CalibrationError(f"none of the {len(rows)} steps carries metrics (logits entropy and varentropy)")
    attention_steps = sum(r["attn_entropy"] is not None for r in usable)

    bound_values: dict[int, set] = {}
    for rule in base.regimes:
        for b in rule.bounds:
            bound_values.setdefault(b.metric, set()).add(b.value)
    quantile_of: dict[int, dict] = {}
    value_of: dict[int, dict] = {}
    for metric in sorted(bound_values):
        key = _METRIC_BY_ENUM[metric]
        observed = [r[key] for r in usable if r[key] is not None]
        if not observed:
            raise CalibrationError(
                f"base profile {base.name} bounds {profile_pb2.Metric.Name(metric)}, but none of the {len(usable)} "
                "steps carries attention metrics (record with attention, or use base entropix)"
            )
        values = sorted(bound_values[metric])
        k = len(values)
        quantile_of[metric], value_of[metric] = {}, {}
        for i, v in enumerate(values):
            q = (
                (quantile_low + quantile_high) / 2
                if k == 1
                else quantile_low + i * (quantile_high - quantile_low) / (k - 1)
            )
            quantile_of[metric][v] = q
            value_of[metric][v] = quantile(observed, q)

    profile = profile_pb2.Profile()
    profile.CopyFrom(base)
    profile.name = name
    bounds = []
    for rule in profile.regimes:
        for b in rule.bounds:
            base_value = b.value
            b.value = value_of[b.metric][base_value]
            bounds.append((rule.regime, b.metric, b.op, base_value, quantile_of[b.metric][base_value], b.value))

    c = base.coefficients

    def x_of(r: dict) -> float:
        return (
            c.adaptive_temperature_logits_entropy * r["logits_entropy"]
            + c.adaptive_temperature_logits_varentropy * r["logits_varentropy"]
            + c.adaptive_temperature_attn_entropy * (r["attn_entropy"] or 0.0)
            + c.adaptive_temperature_attn_varentropy * (r["attn_varentropy"] or 0.0)
            - c.adaptive_temperature_agreement * (r["agreement"] or 0.0)
        )

    xs = [x_of(r) for r in usable]
    x_min, x_max = min(xs), max(xs)
    s = (temperature_max / t - 1) / x_max if x_max > 0 else 1.0
    pc = profile.coefficients
    pc.adaptive_temperature_logits_entropy = s * c.adaptive_temperature_logits_entropy
    pc.adaptive_temperature_logits_varentropy = s * c.adaptive_temperature_logits_varentropy
    pc.adaptive_temperature_attn_entropy = s * c.adaptive_temperature_attn_entropy
    pc.adaptive_temperature_attn_varentropy = s * c.adaptive_temperature_attn_varentropy
    pc.adaptive_temperature_agreement = s * c.adaptive_temperature_agreement
    pc.clarify_temperature_max = min(c.clarify_temperature_max, temperature_max)
    pc.explore_temperature_max = min(c.explore_temperature_max, temperature_max)
    pc.resample_temperature_offset = temperature_max / t
    pc.resample_temperature_attn_varentropy = 0.0
    pc.resample_temperature_min = temperature_max
    profile.description = (
        f"calibrated from {len(usable)} steps ({attention_steps} with attention) over {base.name}: bounds at "
        f"quantiles {quantile_low:g}..{quantile_high:g} of the observed metrics, temperatures at most "
        f"{temperature_max:g}"
    )
    out = profile_pb2.ProfileSet()
    out.profiles.append(profile)
    return Calibration(
        profile_set=out,
        steps=len(usable),
        steps_without_metrics=len(rows) - len(usable),
        attention_steps=attention_steps,
        bounds=bounds,
        temperature_scale=s,
        adaptive_temperature_min=t * (1 + s * x_min),
        adaptive_temperature_max=t * (1 + s * x_max),
    )
