"""The reduced addition evaluation (issue 18): a model trained for a fixed small number of steps answers addition
problems through samplerd; evaluate_addition.py (the real command, on a small set and one seed) calibrates
profiles with samplerctl and the Python client (and stops if they disagree), reloads them into its samplerd by
SIGHUP, and writes the doc section and pictures, which are checked here.

The full run is `/usr/bin/python3 examples/torch_host/evaluate_addition.py` (docs/evaluation.md).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402

import addition  # noqa: E402
import sampler_link  # noqa: E402,F401  (puts clients/python on the path: samplerd.calibration)
from model import load_checkpoint, set_torch_threads  # noqa: E402

set_torch_threads(1)
TRAIN_STEPS = int(os.environ.get("ADDITION_TRAIN_STEPS", "150"))
TEST, CALIBRATION = 60, 60
PROFILES = ["greedy", "fixed", "entropix", "entropix-frog", "calibrated", "calibrated-frog"]


def setUpModule():
    global TMP, CKPT, DOC, FIGS, WORK, RESULT
    TMP = tempfile.mkdtemp(prefix="torch-host-addition-")
    CKPT = os.path.join(TMP, "addition.pt")
    helpers.run(
        [
            helpers.PYTHON,
            os.path.join(helpers.HOST_DIR, "addition.py"),
            "--out",
            CKPT,
            "--steps",
            str(TRAIN_STEPS),
            "--check",
            "20",
        ],
        timeout=600,
    )
    DOC, FIGS, WORK = (os.path.join(TMP, n) for n in ("evaluation.md", "figs", "work"))
    with open(DOC, "w") as f:  # a doc with other content: only the addition section may change
        f.write("# Evaluation\n\nother section\n")
    out = os.path.join(TMP, "result.json")
    helpers.run(
        [
            helpers.PYTHON,
            os.path.join(helpers.HOST_DIR, "evaluate_addition.py"),
            "--checkpoint",
            CKPT,
            "--test",
            str(TEST),
            "--calibration",
            str(CALIBRATION),
            "--seeds",
            "1",
            "--bootstrap",
            "200",
            "--doc",
            DOC,
            "--fig-dir",
            FIGS,
            "--work-dir",
            WORK,
            "--json",
            out,
        ],
        timeout=900,
    )
    with open(out) as f:
        RESULT = json.load(f)


class AdditionEvaluationTest(unittest.TestCase):
    def test_splits_are_disjoint(self):
        calib = set(addition.problems("calibration", 200, seed=7))
        test = set(addition.problems("test", 200, seed=7))
        self.assertFalse(calib & test)
        self.assertTrue(all(addition.split_of(a, b) == "test" for a, b in test))

    def test_greedy_through_samplerd_matches_the_models_own_argmax(self):
        model, _ = load_checkpoint(CKPT)
        local = addition.greedy_accuracy(model, addition.problems("test", TEST, seed=7))
        self.assertAlmostEqual(RESULT["rows"]["greedy"]["accuracy"][0], local, places=12)

    def test_every_profile_has_a_row_with_an_interval(self):
        for p in PROFILES:
            row = RESULT["rows"][p]
            self.assertEqual(row["answers"], TEST)
            for key in ("accuracy", "loglik", "unterminated", "distinct", "temperature"):
                est, lo, hi = row[key]
                self.assertLessEqual(lo, est + 1e-12, (p, key))
                self.assertLessEqual(est, hi + 1e-12, (p, key))
            self.assertAlmostEqual(sum(v[0] for v in row["regimes"].values()), 1.0, places=9)
        self.assertEqual(set(RESULT["rows"]["fixed"]["regimes"]), {"FIXED"})
        # the calibrated profiles send steps to greedy decoding and to the adaptive regimes
        self.assertIn("ARGMAX", RESULT["rows"]["calibrated"]["regimes"])
        self.assertGreaterEqual(len(RESULT["rows"]["calibrated"]["regimes"]), 2)

    def test_calibrated_bounds_come_from_the_record_and_were_served(self):
        cal = RESULT["calibrated_profiles"]["calibrated"]
        argmax = [r for r in cal["regimes"] if r["regime"] == "REGIME_ARGMAX"][0]
        entropy = [b["value"] for b in argmax["bounds"] if b["metric"] == "METRIC_LOGITS_ENTROPY"][0]
        record = os.path.join(WORK, "calibration.jsonl")
        from samplerd.calibration import quantile, read_record

        steps = read_record(record)
        self.assertEqual(entropy, quantile([s["logits_entropy"] for s in steps], 0.5))
        with open(os.path.join(WORK, "profiles.json")) as f:
            served = json.load(f)
        self.assertEqual([p["name"] for p in served["profiles"]], ["calibrated", "calibrated-frog"])

    def test_regenerating_either_part_of_the_doc_keeps_the_other(self):
        import evaluate_addition as ea

        with open(DOC, encoding="utf-8") as f:
            doc = f.read()
        section = ea.kept_section(doc)
        self.assertTrue(section.startswith(ea.BEGIN) and section.rstrip().endswith(ea.END_MARK))
        # evaluate.py rewrites the fortunes part and splices the kept section back
        rewritten = ea.splice_section("# Evaluation\n\nnew fortunes part\n", section)
        self.assertEqual(ea.kept_section(rewritten), section)
        self.assertTrue(rewritten.startswith("# Evaluation\n\nnew fortunes part\n"))
        # evaluate_addition.py replaces its section in place, once
        again = ea.splice_section(rewritten, ea.BEGIN + "\nnew\n" + ea.END_MARK + "\n")
        self.assertEqual(again.count(ea.BEGIN), 1)
        self.assertIn("new fortunes part", again)
        self.assertIn("\nnew\n", again)

    def test_auroc_rows_are_probabilities(self):
        names = [row[0] for row in RESULT["auroc"]]
        self.assertIn("max logits entropy", names)
        for name, est, lo, hi in RESULT["auroc"]:
            if est == est:  # NaN when every answer is right or every one wrong
                self.assertTrue(0 <= lo <= hi <= 1, name)

    def test_doc_section_and_pictures(self):
        with open(DOC, encoding="utf-8") as f:
            text = f.read()
        self.assertTrue(text.startswith("# Evaluation\n\nother section\n"))
        self.assertEqual(text.count("<!-- addition:begin -->"), 1)
        for p in PROFILES:
            self.assertIn(f"| `{p}` |", text)
        for needle in ("AUROC", "Regime mix", "samplerctl calibrate --from"):
            self.assertIn(needle, text)
        pngs = sorted(f for f in os.listdir(FIGS) if f.endswith(".png"))
        self.assertEqual(
            pngs, ["addition-accuracy.png", "addition-calibrated-bounds.png", "addition-right-vs-wrong.png"]
        )
        for f in pngs:
            self.assertIn(f"figs/{f}", text)
            helpers.check_png(os.path.join(FIGS, f))


if __name__ == "__main__":
    unittest.main()
