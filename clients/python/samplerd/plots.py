#!/usr/bin/python3
"""Pictures of a generation through samplerd: where each token fell among the profile's regimes.

One PNG per generation, two parts:
  - left: logits entropy against logits varentropy, one dot per generated token coloured by the regime samplerd
    chose, over the profile's regime regions (computed from the profile's own bounds, as `ListProfiles`
    returns them; a rule that also bounds attention metrics is hatched: there the attention decides);
  - right: a timeline of the six metrics per token and the temperature samplerd applied, with the regime of
    each step as a coloured strip on top.

From a recorded generation (the JSON lines file of `generate.py --record`), no server needed:

    /usr/bin/python3 -m samplerd.plots RECORD.jsonl --out picture.png

(matplotlib is needed only here: the `plots` extra, `pip install 'samplerd[plots]'`, or Debian's
python3-matplotlib.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

try:
    import matplotlib
except ImportError as e:
    raise ImportError("samplerd.plots needs matplotlib: pip install 'samplerd[plots]'") from e

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from samplerd.types import METRIC_FIELDS, Regime  # noqa: E402

REGIMES = [r.name for r in Regime if r != Regime.UNSPECIFIED]
REGIME_COLORS = {
    "ARGMAX": "#1f77b4",
    "CLARIFY": "#9467bd",
    "EXPLORE": "#2ca02c",
    "RESAMPLE": "#d62728",
    "ADAPTIVE": "#ff7f0e",
    "FIXED": "#7f7f7f",
    "UNSPECIFIED": "#000000",
}
METRIC_LABELS = {
    "logits_entropy": "logits H\n(bits)",
    "logits_varentropy": "logits VarH\n(bits²)",
    "attn_entropy": "attn H\n(bits)",
    "attn_varentropy": "attn VarH\n(bits²)",
    "agreement": "agreement",
    "interaction_strength": "interaction\nstrength",
}


def save_png(fig, path: str) -> str:
    """Saves a figure as PNG; with Pillow present, as a palette PNG (about a third of the size, same look)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        import io

        from PIL import Image
    except ImportError:
        fig.savefig(path, format="png")
        return path
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True
        )
    return path


def short_regime(name) -> str:
    s = str(name)
    return s[len("REGIME_") :] if s.startswith("REGIME_") else s


def short_metric(name) -> str:
    s = str(name)
    return (s[len("METRIC_") :] if s.startswith("METRIC_") else s).lower()


def load_record(path: str) -> tuple[dict, list[dict], dict]:
    """Reads a generate.py record: (header, steps, summary)."""
    header, steps, summary = {}, [], {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            obj = json.loads(line)
            kind = obj.get("kind")
            if kind == "header":
                header = obj
            elif kind == "step":
                steps.append(obj)
            elif kind == "summary":
                summary = obj
            else:
                raise ValueError(f"{path}:{n}: unknown record kind {kind!r}")
    if not header:
        raise ValueError(f"{path}: no header line")
    return header, steps, summary


def _rules(profile: dict | None) -> tuple[list[tuple[str, list[tuple[str, str, float]]]], str]:
    """A profile dict (protobuf JSON mapping, either field-name style) -> ([(regime, [(metric, op, value)])],
    default regime)."""
    if not profile:
        return [], "ADAPTIVE"
    rules = []
    for rule in profile.get("regimes", []):
        bounds = [
            (short_metric(b.get("metric")), str(b.get("op", "")).replace("OP_", ""), float(b.get("value", 0)))
            for b in rule.get("bounds", [])
        ]
        rules.append((short_regime(rule.get("regime")), bounds))
    default = profile.get("default_regime", profile.get("defaultRegime")) or "ADAPTIVE"
    default = short_regime(default)
    if default == "UNSPECIFIED":
        default = "ADAPTIVE"
    return rules, default


def _holds(value: np.ndarray, op: str, bound: float) -> np.ndarray:
    return value < bound if op == "LT" else value > bound


def regime_regions(profile: dict | None, ent: np.ndarray, vent: np.ndarray):
    """For a grid of (entropy, varentropy): index into REGIMES of the first rule whose logits bounds hold, and
    whether that rule also has bounds on other (attention) metrics."""
    rules, default = _rules(profile)
    region = np.full(ent.shape, REGIMES.index(default) if default in REGIMES else REGIMES.index("ADAPTIVE"))
    partial = np.zeros(ent.shape, dtype=bool)
    decided = np.zeros(ent.shape, dtype=bool)
    for regime, bounds in rules:
        ok = np.ones(ent.shape, dtype=bool)
        others = False
        for metric, op, value in bounds:
            if metric == "logits_entropy":
                ok &= _holds(ent, op, value)
            elif metric == "logits_varentropy":
                ok &= _holds(vent, op, value)
            else:
                others = True
        take = ok & ~decided
        if regime in REGIMES:
            region[take] = REGIMES.index(regime)
        partial[take] = others
        if not others:  # with attention bounds the point may still fall through to a later rule
            decided |= ok
    return region, partial


def _metric(step: dict, name: str):
    v = (step.get("metrics") or {}).get(name)
    return float("nan") if v is None else float(v)


def _applied(step: dict, name: str):
    v = (step.get("applied") or {}).get(name)
    return float("nan") if v is None else float(v)


def draw_scatter(ax, profile: dict | None, steps: list[dict], title: str):
    """Entropy vs varentropy, one dot per step coloured by its regime, over the profile's regions."""
    regimes = [short_regime(s.get("regime")) for s in steps]
    colors = [REGIME_COLORS.get(r, "#000000") for r in regimes]
    ent = np.array([_metric(s, "logits_entropy") for s in steps])
    vent = np.array([_metric(s, "logits_varentropy") for s in steps])
    xmax = max(8.3, float(np.nanmax(ent)) * 1.05 if np.isfinite(ent).any() else 8.3)
    ymax = max(20.0, float(np.nanmax(vent)) * 1.3 if np.isfinite(vent).any() else 20.0)
    xs = np.linspace(0, xmax, 600)
    ys = np.concatenate([np.linspace(0, 0.3, 120), np.geomspace(0.3, ymax, 360)[1:]])
    gx, gy = np.meshgrid(xs, ys)
    region, partial = regime_regions(profile, gx, gy)
    cmap = ListedColormap([REGIME_COLORS[r] for r in REGIMES])
    ax.pcolormesh(
        xs, ys, region, cmap=cmap, vmin=-0.5, vmax=len(REGIMES) - 0.5, alpha=0.18, shading="auto", rasterized=True
    )
    if partial.any():
        ax.contourf(xs, ys, partial.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
    rules, default = _rules(profile)
    for regime, bounds in rules:  # threshold lines
        for metric, op, value in bounds:
            if metric == "logits_entropy":
                ax.axvline(value, color=REGIME_COLORS.get(regime, "k"), lw=0.8, ls="--", alpha=0.7)
            elif metric == "logits_varentropy":
                ax.axhline(value, color=REGIME_COLORS.get(regime, "k"), lw=0.8, ls="--", alpha=0.7)
    many = len(steps) > 400
    ax.scatter(
        ent,
        vent,
        c=colors,
        s=5 if many else 16,
        alpha=0.6 if many else 1.0,
        edgecolors="none" if many else "white",
        linewidths=0.3,
        zorder=3,
    )
    ax.set_yscale("symlog", linthresh=0.1, linscale=0.6)
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, ymax)
    ax.set_xlabel("logits entropy (bits)")
    ax.set_ylabel("logits varentropy (bits², symlog)")
    present = [r for r in REGIMES if r in regimes]
    region_names = sorted({REGIMES[i] for i in np.unique(region)}, key=REGIMES.index)
    handles = [Patch(facecolor=REGIME_COLORS[r], alpha=0.3, label=f"{r} region") for r in region_names]
    handles += [
        plt.Line2D([], [], marker="o", ls="", color=REGIME_COLORS[r], label=f"{r}: {regimes.count(r)} tokens")
        for r in present
    ]
    if partial.any():
        handles.append(Patch(facecolor="none", hatch="///", label="also needs attention bounds"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_title(title, fontsize=10)
    return rules


def profile_label(header: dict) -> str:
    """`entropix`, or for an override such as greedy: `greedy (fixed, temperature=0.0)`."""
    name = str(header.get("profile", "?"))
    server, overrides = header.get("server_profile"), header.get("overrides") or {}
    if overrides or (server and server != name):
        extra = ", ".join(f"{k}={v}" for k, v in overrides.items())
        return f"{name} ({server}{', ' + extra if extra else ''})"
    return name


def plot_scatter(header: dict, steps: list[dict], path: str, title: str | None = None) -> str:
    """Only the entropy/varentropy part (for many generations pooled)."""
    if not steps:
        raise ValueError("no steps to plot")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=80)
    draw_scatter(ax, header.get("profile_def"), steps, title or f"profile {profile_label(header)}")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def plot_generation(header: dict, steps: list[dict], path: str, title: str | None = None) -> str:
    """Writes the two-part picture of one generation to `path` (PNG). Returns the path."""
    if not steps:
        raise ValueError("no steps to plot")
    profile = header.get("profile_def")
    regimes = [short_regime(s.get("regime")) for s in steps]
    colors = [REGIME_COLORS.get(r, "#000000") for r in regimes]

    fig = plt.figure(figsize=(14, 7.2), dpi=80)
    gs = fig.add_gridspec(
        8,
        2,
        width_ratios=[1.0, 1.25],
        height_ratios=[0.35] + [1] * 7,
        hspace=0.18,
        wspace=0.22,
        left=0.06,
        right=0.985,
        top=0.9,
        bottom=0.08,
    )

    ax = fig.add_subplot(gs[:, 0])
    rules = draw_scatter(ax, profile, steps, f"profile {profile_label(header)}: entropy vs varentropy per token")

    # --- right: timeline ---
    x = np.arange(len(steps))
    strip = fig.add_subplot(gs[0, 1])
    strip.bar(x, np.ones(len(steps)), width=1.0, color=colors)
    strip.set_xlim(-0.5, len(steps) - 0.5)
    strip.set_yticks([])
    strip.set_ylabel("regime", rotation=0, ha="right", va="center", fontsize=8)
    strip.tick_params(labelbottom=False, bottom=False)
    prev = strip
    rows = [(m, METRIC_LABELS.get(m, m), np.array([_metric(s, m) for s in steps])) for m in METRIC_FIELDS]
    rows.append(("temperature", "applied\ntemperature", np.array([_applied(s, "temperature") for s in steps])))
    for i, (name, label, values) in enumerate(rows):
        a = fig.add_subplot(gs[i + 1, 1], sharex=prev)
        a.plot(x, values, color="#555555", lw=0.7, zorder=1)
        a.scatter(x, values, c=colors, s=7, zorder=2)
        a.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        a.tick_params(labelsize=7)
        for regime, bounds in rules:
            for metric, op, value in bounds:
                if (
                    metric == name
                    and np.isfinite(values).any()
                    and np.nanmin(values) * 0.5 <= value <= np.nanmax(values) * 2 + 1e-9
                ):
                    a.axhline(value, color=REGIME_COLORS.get(regime, "k"), lw=0.6, ls="--", alpha=0.6)
        if not np.isfinite(values).any():
            a.text(0.5, 0.5, "absent", transform=a.transAxes, ha="center", va="center", fontsize=8, color="#888")
        if i < len(rows) - 1:
            a.tick_params(labelbottom=False)
        prev = a
    prev.set_xlabel("generated token (step)")
    text = "".join(s.get("text", "") for s in steps)
    snippet = text.replace("\n", "⏎").replace("\t", " ")
    if len(snippet) > 110:
        snippet = snippet[:107] + "..."
    fig.suptitle(
        title or f"{profile_label(header)} · seed {header.get('seed', '?')} · " f"prompt {header.get('prompt', '')!r}",
        fontsize=11,
    )
    fig.text(0.5, 0.935, snippet, ha="center", fontsize=8, family="monospace", color="#333333")
    save_png(fig, path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record", help="JSON lines file written by generate.py --record")
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    header, steps, _ = load_record(args.record)
    plot_generation(header, steps, args.out, args.title)
    print(f"wrote {args.out} ({len(steps)} tokens, profile {header.get('profile')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
