#!/usr/bin/python3
"""A task with right answers: up-to-3-digit addition written as characters, for the model of model.py.

    "417+086=" -> "305$"     (operands zero-padded to 3 digits; the answer is the sum's digits least
                              significant first, as the carries flow, then "$")

Fixed-width operands and a reversed answer put every digit the model needs at a fixed distance from the one it
writes, which a small model with relative (rotary) positions learns within minutes.

Problems are drawn with the number of digits of each operand uniform in 1..3, then the value uniform among
numbers of that length, so short and long operands are equally common. A problem belongs to exactly one split
by a hash of (a, b): `train` (90 %), `calibration` and `test` (5 % each), so the problems a profile is
calibrated on and the ones it is evaluated on are never trained on, and never each other.

Training (`--out`): the byte-level transformer of model.py (vocabulary 256, of which the task uses 13 symbols)
with a loss on the answer characters only, AdamW, a fixed seed and a fixed step count, so the weights come out
identical from run to run on one machine kind.

    /usr/bin/python3 examples/torch_host/addition.py --out examples/torch_host/out/addition.pt   # ~2-3 min
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model import ByteGPT, ModelConfig, save_checkpoint, set_torch_threads  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

END = "$"
PAD = ord(" ")
CONTEXT = 16
SPLITS = ("train", "calibration", "test")


def split_of(a: int, b: int) -> str:
    h = int.from_bytes(hashlib.blake2b(f"{a}+{b}".encode(), digest_size=4).digest(), "little") % 20
    return "calibration" if h == 0 else "test" if h == 1 else "train"


def draw(rng: random.Random) -> tuple[int, int]:
    def operand() -> int:
        digits = rng.randint(1, 3)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    return operand(), operand()


def problems(split: str, n: int, seed: int) -> list[tuple[int, int]]:
    """`n` distinct problems of `split`, in a fixed order for a given seed."""
    rng = random.Random(f"{split}-{seed}")
    seen, out = set(), []
    while len(out) < n:
        a, b = draw(rng)
        if split_of(a, b) == split and (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def prompt_of(a: int, b: int) -> str:
    return f"{a:03d}+{b:03d}="


def answer_of(a: int, b: int) -> str:
    return f"{str(a + b)[::-1]}{END}"


def batch(rng: random.Random, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs `[size, CONTEXT]` and targets with -100 outside the answer (the loss sees answers only)."""
    x = torch.full((size, CONTEXT), PAD, dtype=torch.long)
    y = torch.full((size, CONTEXT), -100, dtype=torch.long)
    for i in range(size):
        while True:
            a, b = draw(rng)
            if split_of(a, b) == "train":
                break
        p, ans = prompt_of(a, b).encode(), answer_of(a, b).encode()
        seq = p + ans
        x[i, : len(seq)] = torch.tensor(list(seq))
        # position t predicts seq[t + 1]: answer characters are predicted from positions len(p)-1 .. len(seq)-2
        y[i, len(p) - 1 : len(seq) - 1] = torch.tensor(list(ans))
    return x, y


@torch.no_grad()
def greedy_accuracy(model: ByteGPT, probs: list[tuple[int, int]]) -> float:
    """Exact match of greedy answers decoded locally (no samplerd): a training-time check only."""
    model.eval()
    right = 0
    for a, b in probs:
        cache = model.new_cache()
        feed, out = list(prompt_of(a, b).encode()), ""
        for _ in range(5):
            logits, _ = model.step(feed, cache)
            tok = int(torch.argmax(logits))
            out += chr(tok)
            if chr(tok) == END:
                break
            feed = [tok]
        right += out == answer_of(a, b)
    model.train()
    return right / len(probs)


def meta_of(args, steps: int, seconds: float, ema: float, acc: float, model: ByteGPT) -> dict:
    return {
        "task": "addition",
        "steps": steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(seconds, 2),
        "final_train_loss_ema": round(ema, 4),
        "greedy_check_accuracy": acc,
        "check_problems": args.check,
        "torch": torch.__version__,
        "parameters": model.num_parameters(),
        "threads": args.threads,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1750)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machines are small and shared)")
    ap.add_argument("--check", type=int, default=200, help="calibration problems for the final greedy check")
    ap.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also write OUT.stepN.pt and its greedy check every N steps (the learning rate does not "
        "depend on --steps, so --steps N reproduces it)",
    )
    args = ap.parse_args(argv)

    set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = ByteGPT(ModelConfig(n_layer=2, n_head=4, d_model=128, context=CONTEXT))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    t0 = time.monotonic()
    ema = None
    model.train()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 30)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(rng, args.batch)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss {ema:.4f} {time.monotonic() - t0:.1f}s", file=sys.stderr)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            acc = greedy_accuracy(model, problems("calibration", args.check, seed=99))
            save_checkpoint(
                f"{args.out}.step{step + 1}.pt", model, meta_of(args, step + 1, time.monotonic() - t0, ema, acc, model)
            )
            print(f"  step {step + 1}: local greedy exact match {acc:.3f}", file=sys.stderr)
    seconds = time.monotonic() - t0
    acc = greedy_accuracy(model, problems("calibration", args.check, seed=99))
    save_checkpoint(args.out, model, meta_of(args, args.steps, seconds, ema, acc, model))
    print(
        f"trained {args.steps} steps in {seconds:.1f}s, loss {ema:.4f}, local greedy exact match {acc:.3f} on "
        f"{args.check} calibration-split problems; wrote {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
