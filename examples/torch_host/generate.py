#!/usr/bin/python3
"""Generates text with a trained checkpoint, letting samplerd choose every token.

    /usr/bin/python3 examples/torch_host/generate.py --checkpoint build-host/fortunes.pt \\
        --target 127.0.0.1:50051 --prompt "The meaning of life" --max-new-tokens 200 \\
        --profile entropix --plot /tmp/entropix.png --record /tmp/entropix.jsonl

Per step the model (model.py, KV cache, one position per step) computes the logits of the next byte and the
pre-softmax attention scores of the newest query over its valid KV positions, `[layers, heads, kv_len]`; both
go to samplerd, which returns the token, the regime, the parameters it applied and the six metrics. The text is
printed as it comes, each byte coloured by its regime (on a terminal; --color always|never to force).

--profile: `entropix` and `fixed` are samplerd's profiles of those names; `greedy` is profile `fixed` with a
per-step override temperature = 0. Any other name is passed to samplerd as a profile name.
--record FILE.jsonl keeps every step (header, one line per token, summary): `plots.py FILE.jsonl --out X.png`
draws the same picture later without a server.
"""
from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model import ByteGPT, load_checkpoint, set_torch_threads  # noqa: E402
import sampler_link  # noqa: E402

ANSI = {
    "ARGMAX": "\033[34m",
    "CLARIFY": "\033[35m",
    "EXPLORE": "\033[32m",
    "RESAMPLE": "\033[31m",
    "ADAPTIVE": "\033[33m",
    "FIXED": "\033[90m",
}
RESET, BOLD = "\033[0m", "\033[1m"
RECENT_TOKENS = 128


def profile_request(choice: str) -> tuple[str, dict]:
    """--profile value -> (samplerd profile name, per-step parameter overrides)."""
    if choice == "greedy":
        return "fixed", {"temperature": 0.0}
    return choice, {}


def generate(
    model: ByteGPT,
    link,
    prompt: bytes,
    max_new_tokens: int,
    profile: str = "entropix",
    seed: int = 1,
    sequence_id: str = "torch-host",
    send_attention: bool = True,
    profiles: dict | None = None,
    on_step=None,
    stop: bytes | None = None,
) -> tuple[dict, list[dict], dict]:
    """Runs one generation; returns (header, steps, summary) as recorded by --record.

    `link` is a sampler_link connection; `profiles` the ListProfiles answer (fetched when None);
    `on_step(step_dict)` is called after every token; `stop` ends the generation once the text ends with it.
    """
    if not prompt:
        raise ValueError("the prompt must not be empty (the model needs at least one byte to condition on)")
    server_profile, overrides = profile_request(profile)
    if profiles is None:
        profiles, _ = link.list_profiles()
    if server_profile not in profiles:
        raise ValueError(f"samplerd has no profile {server_profile!r} (it has {sorted(profiles)})")
    header = {
        "kind": "header",
        "profile": profile,
        "server_profile": server_profile,
        "overrides": overrides,
        "profile_def": profiles[server_profile],
        "prompt": prompt.decode("utf-8", "replace"),
        "seed": seed,
        "sequence_id": sequence_id,
        "max_new_tokens": max_new_tokens,
        "attention_sent": send_attention,
        "link": getattr(link, "kind", "?"),
        "model": {
            "n_layer": model.cfg.n_layer,
            "n_head": model.cfg.n_head,
            "d_model": model.cfg.d_model,
            "context": model.cfg.context,
            "parameters": model.num_parameters(),
        },
    }
    session = link.session(
        sequence_id, seed=seed, profile=server_profile, params=overrides, recent=list(prompt), max_recent=RECENT_TOKENS
    )
    cache = model.new_cache()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    feed = list(prompt)
    steps: list[dict] = []
    generated = bytearray()
    model_s = sampler_s = 0.0
    t_start = time.perf_counter()
    for i in range(max_new_tokens):
        t0 = time.perf_counter()
        logits, attention = model.step(feed, cache)
        t1 = time.perf_counter()
        out = session.step(logits.numpy(), attention.numpy() if send_attention else None)
        t2 = time.perf_counter()
        model_s += t1 - t0
        sampler_s += t2 - t1
        if not 0 <= out.token < logits.shape[0]:
            raise RuntimeError(f"samplerd returned token {out.token} outside the vocabulary at step {i}")
        generated.append(out.token)
        rec = {
            "kind": "step",
            "step": i,
            "token": out.token,
            "text": decoder.decode(bytes([out.token])),
            "regime": out.regime,
            "logprob": out.logprob,
            "metrics": out.metrics,
            "applied": out.applied,
            "kv_len": int(attention.shape[-1]),
            "attention_shape": list(attention.shape),
            "position": cache.position - 1,
            "model_ms": round((t1 - t0) * 1e3, 4),
            "sampler_ms": round((t2 - t1) * 1e3, 4),
            "server_micros": out.server_micros,
        }
        steps.append(rec)
        if on_step:
            on_step(rec)
        feed = [out.token]
        if stop and generated.endswith(stop):
            break
    total_s = time.perf_counter() - t_start
    n = len(steps)
    mix: dict[str, int] = {}
    for s in steps:
        mix[s["regime"]] = mix.get(s["regime"], 0) + 1
    summary = {
        "kind": "summary",
        "tokens": n,
        "text": generated.decode("utf-8", "replace"),
        "regime_mix": mix,
        "mean_logprob": sum(s["logprob"] for s in steps) / max(1, n),
        "seconds": round(total_s, 4),
        "model_seconds": round(model_s, 4),
        "sampler_seconds": round(sampler_s, 4),
        "tokens_per_second": round(n / total_s, 2) if total_s else None,
    }
    return header, steps, summary


def write_record(path: str, header: dict, steps: list[dict], summary: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for obj in [header, *steps, summary]:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _printable(text: str) -> str:
    return "".join(c if c in "\n\t" or c >= " " else "·" for c in text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--target", required=True, help="samplerd address, host:port or unix:/path")
    ap.add_argument("--prompt", required=True, help="text to continue; in an ASCII prompt \\n, \\t are escapes")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--profile", default="entropix", help="entropix | fixed | greedy (or any samplerd profile)")
    ap.add_argument("--seed", type=int, default=1, help="samplerd seed (with the sequence id, fixes every draw)")
    ap.add_argument("--sequence-id", default="torch-host")
    ap.add_argument("--no-attention", action="store_true", help="send logits only")
    ap.add_argument("--stop-at-separator", action="store_true", help="stop at the end of a fortune (\\n%%\\n)")
    ap.add_argument("--plot", metavar="FILE.png", help="write the entropy/varentropy + timeline picture")
    ap.add_argument("--record", metavar="FILE.jsonl", help="write every step as JSON lines")
    ap.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--quiet", action="store_true", help="do not print the text")
    args = ap.parse_args(argv)

    set_torch_threads(1)
    model, meta = load_checkpoint(args.checkpoint)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    text = args.prompt
    if "\\" in text and text.isascii():  # "\n", "\t" and friends in an ASCII prompt are escapes
        text = codecs.decode(text, "unicode_escape")
    prompt = text.encode("utf-8")
    if not prompt:
        ap.error("--prompt must not be empty")

    shown = {"regime": None}

    def show(rec: dict) -> None:
        if args.quiet:
            return
        text = _printable(rec["text"])
        if color and rec["regime"] != shown["regime"]:  # escape codes only where the regime changes
            text = f"{RESET}{ANSI.get(rec['regime'], '')}{text}"
            shown["regime"] = rec["regime"]
        sys.stdout.write(text)
        sys.stdout.flush()

    link = sampler_link.connect(args.target)
    try:
        if not args.quiet:
            p = _printable(prompt.decode("utf-8", "replace"))
            sys.stdout.write(f"{BOLD}{p}" if color else p)
        header, steps, summary = generate(
            model,
            link,
            prompt,
            args.max_new_tokens,
            profile=args.profile,
            seed=args.seed,
            sequence_id=args.sequence_id,
            send_attention=not args.no_attention,
            on_step=show,
            stop=b"\n%\n" if args.stop_at_separator else None,
        )
    finally:
        link.close()
    header["checkpoint"] = os.path.abspath(args.checkpoint)
    header["checkpoint_val_loss"] = meta.get("val_loss")
    header["target"] = args.target
    if not args.quiet:
        sys.stdout.write(f"{RESET}\n" if color else "\n")
    mix = ", ".join(f"{k} {v}" for k, v in sorted(summary["regime_mix"].items(), key=lambda kv: -kv[1]))
    legend = " ".join(f"{ANSI[r]}{r}{RESET}" if color else r for r in ANSI)
    print(
        f"-- {summary['tokens']} tokens, {summary['tokens_per_second']} tokens/s (model "
        f"{summary['model_seconds']:.3f}s, samplerd {summary['sampler_seconds']:.3f}s); regimes: {mix}; "
        f"mean logprob {summary['mean_logprob']:.3f} nats",
        file=sys.stderr,
    )
    if color and not args.quiet:
        print(f"-- colours: {legend}", file=sys.stderr)
    if args.record:
        write_record(args.record, header, steps, summary)
    if args.plot:
        import plots

        plots.plot_generation(header, steps, args.plot)
        print(f"-- wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
