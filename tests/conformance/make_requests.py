#!/usr/bin/python3
"""Writes requests.json, the conformance suite's shared request set, from the golden cases of tests/golden.

    /usr/bin/python3 tests/conformance/make_requests.py [--golden tests/golden] > tests/conformance/requests.json

Run it again only when cases.json changes; compare.py checks that requests.json is what this script writes.
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLARIFY_TOKEN = 2564
# The `fixed` profile has no adaptation; its expectations in cases.json use these request parameters.
FIXED_PARAMS = {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05}


def golden_requests(cases):
    out = []
    for c in cases:
        dtypes = ["f32", "bf16"] if c["name"].startswith("bf16_exact") else ["f32"]
        for profile in ("entropix", "entropix-frog", "fixed"):
            for after_clarify in (False, True):
                for dtype in dtypes:
                    rid = (
                        f"golden/{c['name']}/{profile}"
                        + ("/after_clarify" if after_clarify else "")
                        + ("/bf16" if dtype == "bf16" else "")
                    )
                    out.append(
                        {
                            "id": rid,
                            "logits": c["logits"],
                            "attention": c["attention"],
                            "dtype": dtype,
                            "recent_tokens": c["recent_tokens"] + ([CLARIFY_TOKEN] if after_clarify else []),
                            "seed": str(c["seed"]),  # decimal string: uint64 does not fit a JSON double
                            "profile": profile,
                            "params": FIXED_PARAMS if profile == "fixed" else None,
                            "top_logprobs": 5,
                            "expect_regime": None
                            if c["expect_error"]
                            else c["regimes"][profile]["regime_after_clarify" if after_clarify else "regime"],
                            "expect_error": c["expect_error"],
                        }
                    )
    return out


GENERATION = {
    "steps": 200,
    "vocab": 4096,
    "layers": 2,
    "heads": 4,
    "kv_base": 16,
    "dtypes": ["f32", "f16", "bf16"],
    "sequences": [
        {"id": "gen/entropix", "profile": "entropix", "seed": "11", "salt": 1, "prompt": [17, 99, 1], "params": None},
        {
            "id": "gen/entropix-frog",
            "profile": "entropix-frog",
            "seed": "12",
            "salt": 2,
            "prompt": [5, 2],
            "params": None,
        },
        {
            "id": "gen/fixed-penalties",
            "profile": "fixed",
            "seed": "13",
            "salt": 3,
            "prompt": [3],
            "params": {
                "temperature": 0.8,
                "top_k": 50,
                "top_p": 0.95,
                "min_p": 0.02,
                "repetition_penalty": 1.3,
                "frequency_penalty": 0.25,
                "presence_penalty": 0.5,
            },
        },
        {
            "id": "gen/default-profile",
            "profile": "",
            "seed": "18446744073709551557",
            "salt": 4,
            "prompt": [2564, 2564],
            "params": None,
        },
    ],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", type=Path, default=HERE.parent / "golden")
    args = ap.parse_args()
    cases = json.loads((args.golden / "cases.json").read_text())["cases"]
    doc = {
        "format": 1,
        "about": "The conformance suite's request set; see tests/conformance/README.md. Paths are relative to "
        "the golden folder (tests/golden).",
        "golden": golden_requests(cases),
        "generation": GENERATION,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
