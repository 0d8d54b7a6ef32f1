"""A byte-level decoder-only transformer in plain torch, made to host samplerd.

The model is a small GPT: token embedding, pre-norm blocks of causal multi-head self-attention with rotary
position embeddings (RoPE) and an exact-GELU MLP, a final LayerNorm and an output head tied to the embedding.
Vocabulary = the 256 byte values, so any text round-trips and no tokenizer file is needed.

For decoding it keeps a KV cache (`KVCache`) so that each step costs one position. `ByteGPT.step` returns,
for the newest position only:
  - logits `[256]` (raw, pre-softmax), and
  - the pre-softmax attention scores of that query over the valid KV positions, every layer stacked:
    `[layers, heads, kv_len]` (the `q.k / sqrt(head_dim)` values that enter the softmax; nothing is padded, so
    `kv_len` is exactly the number of positions attended). This is what samplerd's `Step.attention` expects.

RoPE makes attention depend only on the distance between positions, so the cache is a sliding window of the
last `context` positions: a generation can be longer than the training context, and `kv_len` grows with each
step until it reaches `context`, then stays there.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

VOCAB_SIZE = 256
CHECKPOINT_FORMAT = "samplerd-torch-host/1"


_interop_set = False


def set_torch_threads(n: int = 1) -> None:
    """One torch thread by default: the machines this runs on are small and shared."""
    global _interop_set
    torch.set_num_threads(n)
    if not _interop_set:  # torch allows this once per process, before any parallel work
        _interop_set = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass


@dataclass
class ModelConfig:
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    context: int = 128  # training sequence length = KV window at decode time
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def validate(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if min(self.n_layer, self.n_head, self.d_model, self.context) < 1:
            raise ValueError(f"bad config {self}")


def _rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables `[T, head_dim/2]` for the given absolute positions."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) of `x` `[..., T, head_dim]` by the position angles."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


@dataclass
class KVCache:
    """Keys (already rotated) and values of the last `window` positions, per layer: `[heads, n, head_dim]`."""

    window: int
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)
    position: int = 0  # absolute position of the next token

    @property
    def kv_len(self) -> int:
        return 0 if not self.keys else int(self.keys[0].shape[1])

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add `[heads, t, head_dim]` new keys/values to a layer and return the layer's keys and values
        *before* trimming (old window + new), so that every new query can still see its own window; the
        stored cache then keeps only the last `window` positions."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
            keys, values = k, v
        else:
            keys = torch.cat((self.keys[layer], k), dim=1)
            values = torch.cat((self.values[layer], v), dim=1)
        self.keys[layer] = keys[:, -self.window :]
        self.values[layer] = values[:, -self.window :]
        return keys, values


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.fc_out = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.gelu = nn.GELU()  # exact erf GELU: the tanh form is far slower in Debian's torch 1.13

    def _heads(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x `[B, T, d]` -> q, k, v `[B, heads, T, head_dim]`, q and k rotated."""
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(self.cfg.d_model, dim=-1)
        shape = (b, t, self.cfg.n_head, self.cfg.head_dim)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        return _apply_rope(q, cos, sin), _apply_rope(k, cos, sin), v

    def _finish(self, x: torch.Tensor, att_out: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = att_out.shape
        x = x + self.proj(att_out.transpose(1, 2).reshape(b, t, self.cfg.d_model))
        return x + self.fc_out(self.gelu(self.fc(self.ln2(x))))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Training / full-sequence path: causal attention over `x` `[B, T, d]`."""
        q, k, v = self._heads(x, cos, sin)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.cfg.head_dim)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        return self._finish(x, att @ v)

    def forward_cached(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode path for batch 1: `x` `[1, t, d]` new positions; returns (x, scores of the last query
        `[heads, kv_len]` over the valid cached positions, pre-softmax)."""
        t = x.shape[1]
        q, k, v = self._heads(x, cos, sin)
        keys, values = cache.append(layer, k[0], v[0])  # [H, n, hd]: up to window + t positions
        n = keys.shape[1]
        scores = (q[0] @ keys.transpose(-2, -1)) / math.sqrt(self.cfg.head_dim)  # [H, t, n]
        # Query i sits at slot n - t + i; it sees slots at or before its own and less than `window` behind.
        qpos = torch.arange(n - t, n)[:, None]
        kpos = torch.arange(n)[None, :]
        masked = (kpos > qpos) | (kpos <= qpos - cache.window)
        att = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1)
        out = self._finish(x, (att @ values).unsqueeze(0))
        # The newest query's valid positions are exactly the last min(n, window) slots.
        return out, scores[:, -1, -min(n, cache.window) :]


class ByteGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        for blk in self.blocks:  # GPT-2 style: scale the residual projections by depth
            nn.init.normal_(blk.proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))
            nn.init.normal_(blk.fc_out.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_f(x) @ self.embed.weight.t()  # tied output head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Full causal pass: `idx` `[B, T]` (T <= context) -> logits `[B, T, 256]`."""
        t = idx.shape[1]
        if t > self.cfg.context:
            raise ValueError(f"sequence of {t} > context {self.cfg.context}")
        cos, sin = _rope_tables(torch.arange(t), self.cfg.head_dim, self.cfg.rope_base)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self._head(x)

    def new_cache(self) -> KVCache:
        return KVCache(window=self.cfg.context)

    @torch.no_grad()
    def step(self, tokens, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token (or a prompt: several, processed at once) to the cached model.

        Returns `(logits [256], attention [layers, heads, kv_len])` for the newest position, both float32;
        attention holds pre-softmax scores over the valid KV positions only (kv_len = min(position+1,
        context)). A prompt longer than the window is fed in window-sized chunks.
        """
        ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        if ids.numel() == 0:
            raise ValueError("step needs at least one token")
        for start in range(0, ids.numel(), self.cfg.context):
            chunk = ids[start : start + self.cfg.context]
            t = chunk.numel()
            pos = torch.arange(cache.position, cache.position + t)
            cos, sin = _rope_tables(pos, self.cfg.head_dim, self.cfg.rope_base)
            x = self.embed(chunk)[None]
            rows = []
            for layer, blk in enumerate(self.blocks):
                x, scores = blk.forward_cached(x, cos, sin, cache, layer)
                rows.append(scores)
            cache.position += t
        logits = self._head(x)[0, -1]
        return logits.float().contiguous(), torch.stack(rows).float().contiguous()


def save_checkpoint(path: str, model: ByteGPT, meta: dict | None = None) -> None:
    """Writes config, weights and training facts; `load_checkpoint` is the only reader."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(model.cfg),
            "state_dict": model.state_dict(),
            "meta": meta or {},
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: str) -> tuple[ByteGPT, dict]:
    """Loads a checkpoint written by `save_checkpoint`; returns (model in eval mode, meta)."""
    ckpt = torch.load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    model = ByteGPT(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])  # strict: every tensor must match
    model.eval()
    return model, ckpt.get("meta", {})


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(tokens) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
