"""The whole loop against a live samplerd: a tiny model trained for seconds by train.py generates through
samplerd with generate.py (the real CLI), and the records, pictures and evaluation are checked.

samplerd: $SAMPLERD_TARGET if set (scripts/test-torch-host.sh starts one), else a private one from
$SAMPLERD_BIN / build/service/samplerd (then its SIGTERM exit code is checked too).
"""
from __future__ import annotations

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402

import torch  # noqa: E402

import generate as gen  # noqa: E402
import plots  # noqa: E402
import sampler_link  # noqa: E402
from model import load_checkpoint, set_torch_threads  # noqa: E402

set_torch_threads(1)

PROMPT = "Q: Why"
NEW = 48  # > context 32 - len(PROMPT): the KV window fills up during the generation
ADAPTIVE_REGIMES = {"ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE"}
ATTENTION_METRICS = ("attn_entropy", "attn_varentropy", "agreement", "interaction_strength")


def setUpModule():
    global TMP, CKPT, TARGET, RECORDS
    TMP = tempfile.mkdtemp(prefix="torch-host-e2e-")
    CKPT = helpers.tiny_checkpoint()
    TARGET = helpers.samplerd_target()
    RECORDS = {}
    for profile in ("entropix", "fixed", "greedy"):
        rec = os.path.join(TMP, f"{profile}.jsonl")
        png = os.path.join(TMP, f"{profile}.png")
        p = helpers.run(
            [
                helpers.PYTHON,
                os.path.join(helpers.HOST_DIR, "generate.py"),
                "--checkpoint",
                CKPT,
                "--target",
                TARGET,
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                str(NEW),
                "--profile",
                profile,
                "--seed",
                "7",
                "--record",
                rec,
                "--plot",
                png,
                "--color",
                "always",
            ]
        )
        RECORDS[profile] = {
            "record": rec,
            "png": png,
            "stdout": p.stdout,
            "stderr": p.stderr,
            "data": plots.load_record(rec),
        }


def tearDownModule():
    helpers.stop_private_server()


def replay(model, prompt: bytes, tokens: list[int]):
    """The model's own logits and attention shapes along a generated text."""
    cache = model.new_cache()
    feed = list(prompt)
    out = []
    for t in tokens:
        logits, att = model.step(feed, cache)
        out.append((logits, list(att.shape)))
        feed = [t]
    return out


class EndToEndTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model, _ = load_checkpoint(CKPT)
        cls.L, cls.H, cls.C = cls.model.cfg.n_layer, cls.model.cfg.n_head, cls.model.cfg.context

    def test_a_token_comes_back_for_every_step(self):
        for profile, r in RECORDS.items():
            header, steps, summary = r["data"]
            self.assertEqual([s["step"] for s in steps], list(range(NEW)), profile)
            for s in steps:
                self.assertIsInstance(s["token"], int)
                self.assertTrue(0 <= s["token"] < 256, f"{profile}: token {s['token']}")
            self.assertEqual(summary["tokens"], NEW)
            self.assertTrue(summary["text"])

    def test_the_python_client_carries_the_steps(self):
        """With clients/python in the tree, the host must use it (not the fallback stubs)."""
        if os.path.isdir(os.path.join(helpers.REPO, "clients", "python", "samplerd")):
            for profile, r in RECORDS.items():
                self.assertEqual(r["data"][0]["link"], "client", profile)

    def test_regime_names_are_valid_and_match_the_profile(self):
        for profile, r in RECORDS.items():
            regimes = {s["regime"] for s in r["data"][1]}
            self.assertTrue(regimes <= set(sampler_link.VALID_REGIMES), f"{profile}: {regimes}")
            if profile == "entropix":
                self.assertTrue(regimes <= ADAPTIVE_REGIMES, f"entropix answered {regimes}")
            else:
                self.assertEqual(regimes, {"FIXED"}, profile)

    def test_attention_shape_follows_the_kv_length(self):
        for profile, r in RECORDS.items():
            for s in r["data"][1]:
                kv = min(len(PROMPT) + s["step"], self.C)
                self.assertEqual(s["attention_shape"], [self.L, self.H, kv], f"{profile} step {s['step']}")
                self.assertEqual(s["kv_len"], kv)
        # and the window really filled up: the last steps sit at the cap
        self.assertEqual(RECORDS["entropix"]["data"][1][-1]["kv_len"], self.C)

    def test_attention_metrics_come_back_because_attention_was_sent(self):
        for profile, r in RECORDS.items():
            for s in r["data"][1]:
                for m in ("logits_entropy", "logits_varentropy") + ATTENTION_METRICS:
                    self.assertIsNotNone(s["metrics"][m], f"{profile} step {s['step']}: {m} missing")
                self.assertGreaterEqual(s["metrics"]["logits_entropy"], 0.0)
                self.assertLessEqual(s["metrics"]["logits_entropy"], 8.0 + 1e-3)  # 256 symbols: at most 8 bits
                # attention entropy over kv_len positions is at most log2(kv_len) bits
                self.assertLessEqual(s["metrics"]["attn_entropy"], torch.log2(torch.tensor(s["kv_len"])).item() + 1e-3)

    def test_greedy_takes_the_models_argmax_and_logprobs_match_the_model(self):
        for profile, r in RECORDS.items():
            steps = r["data"][1]
            tokens = [s["token"] for s in steps]
            for s, (logits, shape) in zip(steps, replay(self.model, PROMPT.encode(), tokens)):
                self.assertEqual(shape, s["attention_shape"])
                want = float(torch.log_softmax(logits.double(), -1)[s["token"]])
                self.assertAlmostEqual(s["logprob"], want, delta=1e-3, msg=f"{profile} step {s['step']}")
                if profile == "greedy":
                    self.assertEqual(s["applied"]["temperature"], 0.0)
                    self.assertEqual(s["token"], int(torch.argmax(logits)), f"greedy step {s['step']}")

    def test_terminal_output_is_coloured_by_regime(self):
        out = RECORDS["entropix"]["stdout"]
        self.assertTrue(out.startswith(gen.BOLD + PROMPT))
        regimes = {s["regime"] for s in RECORDS["entropix"]["data"][1]}
        for regime in regimes:
            self.assertIn(gen.ANSI[regime], out)
        self.assertIn(gen.ANSI["FIXED"], RECORDS["fixed"]["stdout"])
        plain = helpers.run(
            [
                helpers.PYTHON,
                os.path.join(helpers.HOST_DIR, "generate.py"),
                "--checkpoint",
                CKPT,
                "--target",
                TARGET,
                "--prompt",
                PROMPT,
                "--max-new-tokens",
                "5",
                "--color",
                "never",
            ]
        )
        self.assertNotIn("\033[", plain.stdout)
        self.assertTrue(plain.stdout.startswith(PROMPT))

    def test_pictures_are_valid_pngs(self):
        for profile, r in RECORDS.items():
            w, h = helpers.check_png(r["png"])
            self.assertGreater(w, h, "two panels side by side")
        again = os.path.join(TMP, "from-record.png")
        helpers.run(
            [helpers.PYTHON, os.path.join(helpers.HOST_DIR, "plots.py"), RECORDS["entropix"]["record"], "--out", again]
        )
        helpers.check_png(again)

    def test_regions_come_from_the_profile_bounds(self):
        header = RECORDS["entropix"]["data"][0]
        prof = header["profile_def"]
        self.assertEqual(prof["name"], "entropix")
        ent = torch.tensor([[0.05, 4.0, 2.0, 6.0, 2.0]]).numpy()
        vent = torch.tensor([[0.05, 0.05, 7.0, 7.0, 2.0]]).numpy()
        region, _ = plots.regime_regions(prof, ent, vent)
        self.assertEqual(
            [plots.REGIMES[i] for i in region[0]], ["ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE"]
        )
        fixed_region, _ = plots.regime_regions(RECORDS["fixed"]["data"][0]["profile_def"], ent, vent)
        self.assertEqual({plots.REGIMES[i] for i in fixed_region[0]}, {"FIXED"})

    def test_same_seed_same_text_other_seed_other_text(self):
        link = sampler_link.connect(TARGET)
        try:
            runs = [
                gen.generate(self.model, link, b"A ", 32, profile="fixed", seed=s, sequence_id="det")[1]
                for s in (11, 11, 12)
            ]
            no_att = gen.generate(self.model, link, b"A ", 8, profile="entropix", seed=3, send_attention=False)[1]
        finally:
            link.close()
        tokens = [[s["token"] for s in r] for r in runs]
        self.assertEqual(tokens[0], tokens[1])
        self.assertNotEqual(tokens[0], tokens[2])
        self.assertEqual(tokens[0], [s["token"] for s in RECORDS_fixed_rerun(self.model, 11)])
        for s in no_att:  # without attention the attention metrics are absent, the regime still valid
            self.assertTrue(all(s["metrics"][m] is None for m in ATTENTION_METRICS))
            self.assertIn(s["regime"], ADAPTIVE_REGIMES)

    def test_evaluation_command_writes_the_doc(self):
        doc = os.path.join(TMP, "eval", "evaluation.md")
        figs = os.path.join(TMP, "eval", "figs")
        helpers.run(
            [
                helpers.PYTHON,
                os.path.join(helpers.HOST_DIR, "evaluate.py"),
                "--checkpoint",
                CKPT,
                "--target",
                TARGET,
                "--doc",
                doc,
                "--fig-dir",
                figs,
                "--prompts",
                "2",
                "--seeds",
                "1",
                "--max-new-tokens",
                "24",
            ]
        )
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        for needle in (
            "| `entropix` |",
            "| `fixed` |",
            "| `greedy` |",
            "repetition rate",
            "distinct-2",
            "model alone",
            "Regime mix",
        ):
            self.assertIn(needle, text)
        if os.path.isdir(os.path.join(helpers.REPO, "clients", "python", "samplerd")):
            # the batched run (one request carrying every sequence's step) drew the same tokens
            self.assertIn("2 sequences per request", text)
            self.assertIn("Its tokens are identical to those of the one-at-a-time runs", text)
        pngs = [f for f in os.listdir(figs) if f.endswith(".png")]
        self.assertEqual(len(pngs), 4)
        for f in pngs:
            self.assertIn(f"figs/{f}", text)
            helpers.check_png(os.path.join(figs, f))


def RECORDS_fixed_rerun(model, seed):
    """The same generation through a second, independent connection (any replica, any connection: same draw)."""
    link = sampler_link.connect(TARGET)
    try:
        return gen.generate(model, link, b"A ", 32, profile="fixed", seed=seed, sequence_id="det")[1]
    finally:
        link.close()


if __name__ == "__main__":
    unittest.main()
