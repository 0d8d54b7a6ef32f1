#!/usr/bin/python3
"""Trains the byte-level model of model.py on Debian's fortunes (see corpus.py) and saves a checkpoint.

    /usr/bin/python3 examples/torch_host/train.py --out build-host/fortunes.pt            # default model, ~3 min
    /usr/bin/python3 examples/torch_host/train.py --out /tmp/tiny.pt --max-seconds 10 \\
        --layers 1 --heads 2 --d-model 32 --context 32                                     # a tiny one, for tests

With a fixed --seed and --steps (and no --max-seconds cut) the weights are identical from run to run on the
same machine kind. The process uses one torch thread (OPENBLAS_NUM_THREADS=1): the machines are small and shared.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model import ByteGPT, ModelConfig, save_checkpoint, set_torch_threads  # noqa: E402
import corpus  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Progress:
    """A one-line progress bar with the loss (a plain line every few percent when stderr is not a terminal)."""

    def __init__(self, total: int, max_seconds: float | None = None, width: int = 30, stream=sys.stderr):
        self.total, self.max_seconds, self.width, self.stream = total, max_seconds, width, stream
        self.tty = stream.isatty()
        self.last_pct = -10
        self.t0 = time.monotonic()
        self.last_print = self.t0

    def update(self, step: int, loss: float, extra: str = "", force: bool = False) -> None:
        elapsed = time.monotonic() - self.t0
        frac = step / max(1, self.total)
        if self.max_seconds:  # whichever limit comes first
            frac = max(frac, elapsed / self.max_seconds)
        frac = min(1.0, frac)
        pct = int(frac * 100)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {step:>5}/{self.total} loss {loss:6.3f}{extra}  {elapsed:6.1f}s"
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif force or pct >= self.last_pct + 10 or time.monotonic() - self.last_print >= 15:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_pct = pct
            self.last_print = time.monotonic()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def batches(data: torch.Tensor, context: int, batch: int, gen: torch.Generator):
    """Endless random windows of context+1 bytes: (inputs, targets) `[batch, context]`."""
    hi = data.numel() - context - 1
    while True:
        starts = torch.randint(0, hi, (batch,), generator=gen)
        w = torch.stack([data[s : s + context + 1] for s in starts.tolist()])
        yield w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate_loss(model: ByteGPT, data: torch.Tensor, context: int, max_windows: int = 64) -> float:
    """Mean cross-entropy (nats/byte) over up to `max_windows` evenly spread windows of the validation bytes."""
    model.eval()
    n = (data.numel() - 1) // context
    idx = torch.linspace(0, n - 1, steps=min(n, max_windows)).long().tolist()
    x = torch.stack([data[i * context : i * context + context] for i in idx])
    y = torch.stack([data[i * context + 1 : i * context + context + 1] for i in idx])
    losses = []
    for i in range(0, x.shape[0], 16):
        logits = model(x[i : i + 16])
        losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i : i + 16].reshape(-1), reduction="sum"))
    model.train()
    return float(sum(losses) / y.numel())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="checkpoint path to write")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop after this much training time (the checkpoint is written anyway)",
    )
    ap.add_argument("--steps", type=int, default=1300, help="optimizer steps (default 1300)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=200, help="validation loss every N steps (0 = only at end)")
    ap.add_argument("--corpus-dir", default=corpus.FORTUNE_DIR)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    train_bytes, val_bytes, info = corpus.load_corpus(args.corpus_dir)
    train = torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8).long()
    val = torch.frombuffer(bytearray(val_bytes), dtype=torch.uint8).long()
    cfg = ModelConfig(n_layer=args.layers, n_head=args.heads, d_model=args.d_model, context=args.context)
    model = ByteGPT(cfg)
    print(
        f"corpus: {info['files']} files, {info['fortunes']} fortunes, {info['train_bytes']} train bytes, "
        f"{info['val_bytes']} validation bytes",
        file=sys.stderr,
    )
    print(
        f"model: {cfg.n_layer} layers, {cfg.n_head} heads, d={cfg.d_model}, context {cfg.context}, "
        f"{model.num_parameters()} parameters",
        file=sys.stderr,
    )

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    data = batches(train, cfg.context, args.batch, gen)
    initial_val = evaluate_loss(model, val, cfg.context)
    progress = Progress(args.steps, args.max_seconds)
    t0 = time.monotonic()
    ema = None
    history = []
    val_loss = initial_val
    step = 0
    stopped_by = "steps"
    model.train()
    for step in range(args.steps):
        if args.max_seconds is not None and time.monotonic() - t0 >= args.max_seconds:
            stopped_by = "max-seconds"
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        x, y = next(data)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        history.append(round(loss.item(), 4))
        extra = ""
        if args.eval_every and (step + 1) % args.eval_every == 0:
            val_loss = evaluate_loss(model, val, cfg.context)
            extra = f" val {val_loss:6.3f}"
        progress.update(step + 1, ema, extra, force=bool(extra))
    else:
        step = args.steps
    progress.close()
    steps_done = step
    train_seconds = time.monotonic() - t0
    val_loss = evaluate_loss(model, val, cfg.context)
    meta = {
        "corpus": info,
        "steps": steps_done,
        "planned_steps": args.steps,
        "stopped_by": stopped_by,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(train_seconds, 2),
        "initial_val_loss": round(initial_val, 4),
        "val_loss": round(val_loss, 4),
        "final_train_loss_ema": round(ema, 4) if ema is not None else None,
        "train_loss_history": history,
        "torch": torch.__version__,
        "parameters": model.num_parameters(),
    }
    save_checkpoint(args.out, model, meta)
    print(
        f"trained {steps_done} steps in {train_seconds:.1f}s ({stopped_by}); validation loss "
        f"{initial_val:.3f} -> {val_loss:.3f} nats/byte; wrote {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
