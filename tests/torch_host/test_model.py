"""The model host's own parts, without a server: KV cache, attention tensor, checkpoint, training CLI, corpus,
metrics of the evaluation."""
from __future__ import annotations

import math
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402,F401  (puts examples/torch_host on sys.path)

import torch  # noqa: E402

import corpus  # noqa: E402
import evaluate  # noqa: E402
from model import (
    ByteGPT,
    ModelConfig,
    _apply_rope,
    _rope_tables,
    load_checkpoint,  # noqa: E402
    save_checkpoint,
    set_torch_threads,
)

set_torch_threads(1)


def small_model(seed=0, **kw) -> ByteGPT:
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=4, d_model=32, context=16)
    cfg.update(kw)
    return ByteGPT(ModelConfig(**cfg)).eval()


class ModelTest(unittest.TestCase):
    def setUp(self):
        self.model = small_model()
        g = torch.Generator().manual_seed(7)
        self.ids = torch.randint(0, 256, (50,), generator=g)

    def test_cached_steps_match_the_full_causal_pass(self):
        with torch.no_grad():
            full = self.model(self.ids[None, :16])[0]
        cache = self.model.new_cache()
        for t in range(16):
            logits, _ = self.model.step(self.ids[t], cache)
            self.assertEqual(tuple(logits.shape), (256,))
            self.assertLess(float((logits - full[t]).abs().max()), 1e-4, f"position {t}")

    def test_attention_shape_follows_the_kv_length(self):
        cache = self.model.new_cache()
        _, att = self.model.step(self.ids[:5], cache)  # a 5-byte prompt
        self.assertEqual(list(att.shape), [2, 4, 5])
        for t in range(5, 40):
            _, att = self.model.step(self.ids[t], cache)
            self.assertEqual(list(att.shape), [2, 4, min(t + 1, 16)], f"position {t}")
            self.assertEqual(att.dtype, torch.float32)
            self.assertTrue(torch.isfinite(att).all(), "valid positions only: no -inf padding")
        self.assertEqual(cache.kv_len, 16)
        self.assertEqual(cache.position, 40)

    def test_attention_is_the_pre_softmax_score_of_the_newest_query(self):
        """Layer 0's scores, recomputed from scratch: q.k / sqrt(head_dim) of the last position."""
        t = 12
        cache = self.model.new_cache()
        _, att = self.model.step(self.ids[:t], cache)
        blk = self.model.blocks[0]
        with torch.no_grad():
            x = self.model.embed(self.ids[:t])[None]
            cos, sin = _rope_tables(torch.arange(t), 8, 10000.0)
            q, k, _ = blk.qkv(blk.ln1(x)).split(32, dim=-1)
            q = _apply_rope(q.view(1, t, 4, 8).transpose(1, 2), cos, sin)
            k = _apply_rope(k.view(1, t, 4, 8).transpose(1, 2), cos, sin)
            want = (q[0, :, -1:, :] @ k[0].transpose(-2, -1))[:, 0, :] / math.sqrt(8)
        self.assertLess(float((att[0] - want).abs().max()), 1e-5)
        # pre-softmax: scores are not probabilities
        self.assertGreater(float((att[0].sum(-1) - 1).abs().max()), 1e-3)

    def test_long_prompt_prefill_matches_one_byte_at_a_time(self):
        """Past the window (sliding KV cache), a prompt fed at once (in window-sized chunks) gives the same
        logits and attention as feeding it byte by byte."""
        one = self.model.new_cache()
        for t in range(50):
            l1, a1 = self.model.step(self.ids[t], one)
        chunked = self.model.new_cache()
        self.model.step(self.ids[:23], chunked)
        l2, a2 = self.model.step(self.ids[23:], chunked)
        self.assertLess(float((l1 - l2).abs().max()), 1e-4)
        self.assertEqual(a1.shape, a2.shape)
        self.assertLess(float((a1 - a2).abs().max()), 1e-4)

    def test_checkpoint_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.pt")
            save_checkpoint(path, self.model, {"note": "x"})
            loaded, meta = load_checkpoint(path)
            self.assertEqual(meta, {"note": "x"})
            self.assertFalse(loaded.training)
            a, b = self.model.new_cache(), loaded.new_cache()
            la, aa = self.model.step(self.ids[:9], a)
            lb, ab = loaded.step(self.ids[:9], b)
            self.assertTrue(torch.equal(la, lb))
            self.assertTrue(torch.equal(aa, ab))
            bad = os.path.join(d, "bad.pt")
            torch.save({"weights": 1}, bad)
            with self.assertRaises(ValueError):
                load_checkpoint(bad)

    def test_config_is_validated(self):
        with self.assertRaises(ValueError):
            ByteGPT(ModelConfig(n_head=3, d_model=32))


class CorpusAndTrainingTest(unittest.TestCase):
    def test_corpus_comes_from_the_fortunes_package(self):
        train, val, info = corpus.load_corpus()
        self.assertGreater(info["files"], 20)
        self.assertGreater(len(train), 1_000_000)
        self.assertGreater(len(val), 50_000)
        self.assertFalse(b"\x08" in train or b"\x08" in val, "overstrike backspaces must be removed")
        self.assertEqual(corpus.remove_overstrike(b"a ___\x08\x08\x08big X\x08X\nz"), b"a big X\nz")
        self.assertEqual(set(train[:2000]) - set(range(256)), set())

    def test_train_cli_writes_a_checkpoint_that_learned(self):
        path = helpers.tiny_checkpoint()
        model, meta = load_checkpoint(path)
        self.assertEqual(meta["stopped_by"], "max-seconds")
        self.assertGreater(meta["steps"], 20)
        self.assertLess(
            meta["val_loss"],
            meta["initial_val_loss"] - 1.0,
            "a few seconds of training must cut the validation loss by more than 1 nat/byte",
        )
        self.assertLess(meta["val_loss"], math.log(256))
        self.assertEqual(model.cfg.n_layer, helpers.TINY["layers"])
        self.assertRegex(helpers._state["train_stderr"], r"\[[#-]+\]\s+\d+/\d+ loss\s+\d+\.\d+")


class EvaluationMeasuresTest(unittest.TestCase):
    def test_repetition_rate(self):
        self.assertEqual(evaluate.repetition_rate(b"ab", b"cdefghijklmnopqrstuvwxyz"), 0.0)
        loop = evaluate.repetition_rate(b"x", b"the strange to " * 6)
        self.assertGreater(loop, 0.6)
        self.assertLessEqual(loop, 1.0)

    def test_distinct_n(self):
        self.assertEqual(evaluate.distinct_n(["a b c d"], 2), 1.0)
        self.assertAlmostEqual(evaluate.distinct_n(["a b a b", "a b"], 2), 2 / 4)
        self.assertIsNone(evaluate.distinct_n(["a"], 3))


if __name__ == "__main__":
    unittest.main()
