#!/usr/bin/python3
"""Compares the conformance drivers' records (README.md) and prints `conformance: N/M clients agree`.

    /usr/bin/python3 tests/conformance/compare.py --requests tests/conformance/requests.json \
        --golden tests/golden python=py.txt node=node.txt go=go.txt cpp=cpp.txt

A client agrees when its file is complete and well-formed, its golden records show the regimes (or the
rejection) cases.json expects, and it is identical, byte for byte, to the files of the largest group of clients
that pass those checks. Exit status 0 only when every client agrees.
"""
import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_requests  # noqa: E402

RECORD = re.compile(
    r"^(?P<id>\S+) step=(?P<step>\d+) (?:token=(?P<token>-?\d+) regime=(?P<regime>[A-Z]+) logprob=[0-9a-f]{8} "
    r"applied=(?:[0-9a-f]{8}|-),(?:-?\d+|-),(?:[0-9a-f]{8}|-)(?:,(?:[0-9a-f]{8}|-?\d+|-)){6} "
    r"metrics=(?:[0-9a-f]{8}|-)(?:,(?:[0-9a-f]{8}|-)){5} top=\S* seed=\d+ profile=\S+"
    r"|error=(?P<error>\d+) field=\S*)$"
)
CODES = {"INVALID_ARGUMENT": 3, "RESOURCE_EXHAUSTED": 8, "NOT_FOUND": 5}


def expected_ids(doc):
    ids = [(g["id"], 0) for g in doc["golden"]]
    gen = doc["generation"]
    for t in range(gen["steps"]):
        ids += [(q["id"], t) for q in gen["sequences"]]
    return ids


def check(doc, text):
    """Problems with one client's records (empty list = valid)."""
    lines = text.splitlines()
    want = expected_ids(doc)
    if len(lines) != len(want):
        return [f"{len(lines)} records, expected {len(want)}"]
    problems = []
    golden = {g["id"]: g for g in doc["golden"]}
    vocab = doc["generation"]["vocab"]
    gen_regimes = Counter()
    for n, (line, (rid, step)) in enumerate(zip(lines, want), 1):
        m = RECORD.match(line)
        if not m:
            problems.append(f"line {n}: malformed record: {line[:120]}")
            continue
        if (m["id"], int(m["step"])) != (rid, step):
            problems.append(f"line {n}: {m['id']} step {m['step']}, expected {rid} step {step}")
            continue
        g = golden.get(rid)
        if g is not None:
            if g["expect_error"]:
                if m["error"] != str(CODES[g["expect_error"]]):
                    problems.append(f"{rid}: expected {g['expect_error']}, got: {line[len(rid) + 1:][:80]}")
            elif m["regime"] != g["expect_regime"]:
                problems.append(f"{rid}: regime {m['regime']}, golden expects {g['expect_regime']}")
        else:
            if m["error"] is not None or not 0 <= int(m["token"]) < vocab:
                problems.append(f"line {n}: generation step failed or token out of range: {line[:120]}")
            elif rid == "gen/entropix":
                gen_regimes[m["regime"]] += 1
    if not problems and len(gen_regimes) < 3:
        problems.append(f"gen/entropix visited only {dict(gen_regimes)}: the scripted model is not being followed")
    return problems


def first_difference(a, b):
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines()), 1):
        if x != y:
            return n, x, y
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=Path, default=HERE / "requests.json")
    ap.add_argument("--golden", type=Path, default=HERE.parent / "golden")
    ap.add_argument("outputs", nargs="+", help="name=path of each client's records")
    args = ap.parse_args()
    doc = json.loads(args.requests.read_text())

    cases = json.loads((args.golden / "cases.json").read_text())["cases"]
    if doc["golden"] != make_requests.golden_requests(cases) or doc["generation"] != make_requests.GENERATION:
        print("conformance: requests.json is stale; regenerate it with tests/conformance/make_requests.py")
        print(f"conformance: 0/{len(args.outputs)} clients agree")
        return 1

    texts, valid = {}, {}
    for spec in args.outputs:
        name, _, path = spec.partition("=")
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            print(f"{name}: no records ({path} missing or empty: the driver failed)")
            continue
        texts[name] = p.read_text()
        problems = check(doc, texts[name])
        if problems:
            print(f"{name}: {len(problems)} problem(s); first: " + "; ".join(problems[:3]))
        else:
            valid[name] = texts[name]

    groups = Counter(valid.values())
    agree = []
    if groups:
        majority, _ = groups.most_common(1)[0]
        agree = [n for n, t in valid.items() if t == majority]
        ref = agree[0]
        for n, t in valid.items():
            if t != majority:
                line, mine, theirs = first_difference(t, majority) or (0, "", "")
                print(f"{n}: differs from {', '.join(agree)} at record {line}:\n  {n}: {mine}\n  {ref}: {theirs}")
        print(f"agreeing: {', '.join(agree)} ({len(majority.splitlines())} records each)")
    print(f"conformance: {len(agree)}/{len(args.outputs)} clients agree")
    return 0 if len(agree) == len(args.outputs) else 1


if __name__ == "__main__":
    sys.exit(main())
