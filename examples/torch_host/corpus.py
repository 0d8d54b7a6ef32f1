"""The training text: Debian's `fortunes` package.

Why this corpus: it is the largest body of plain English prose that installs from Debian 12 with no network at
run time (`apt-get install fortunes`, about 0.85 MB download, 2.6 MB of text under /usr/share/games/fortunes/),
it is almost pure ASCII (so a byte-level model wastes nothing on multi-byte characters), and its short,
`%`-separated quotes with `-- Author` lines give a small model a structure it can visibly learn in minutes.

The files are read as bytes; "overstriking" (`X\\bX` bold and `_\\bX` underline from old terminals) is removed;
`ascii-art` is left out (pictures, not text). Every 20th fortune goes to the validation set, so the split is
deterministic and both sets cover every file.
"""
from __future__ import annotations

import hashlib
import os
import re

FORTUNE_DIR = "/usr/share/games/fortunes"
EXCLUDED = {"ascii-art"}
VAL_EVERY = 20
SEPARATOR = b"\n%\n"


def _erase(m: "re.Match") -> bytes:
    out = bytearray()
    for b in m.group():
        if b == 8:
            if out:
                out.pop()
        else:
            out.append(b)
    return bytes(out)


def remove_overstrike(raw: bytes) -> bytes:
    """Old-terminal bold/underline: every backspace erases the byte before it (`X\bX` -> `X`,
    `___\b\b\bword` -> `word`), line by line."""
    return re.sub(rb"[^\n]*\x08[^\n]*", _erase, raw)


def fortune_files(directory: str = FORTUNE_DIR) -> list[str]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is missing: install Debian's corpus with `apt-get install fortunes`")
    names = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if "." in name or name in EXCLUDED or os.path.islink(path) or not os.path.isfile(path):
            continue  # .dat index files and the .u8 symlinks
        names.append(path)
    if not names:
        raise FileNotFoundError(f"no fortune files in {directory}")
    return names


def load_corpus(directory: str = FORTUNE_DIR) -> tuple[bytes, bytes, dict]:
    """Returns (train bytes, validation bytes, facts about the corpus)."""
    train, val = [], []
    digest = hashlib.sha256()
    files = fortune_files(directory)
    n_fortunes = 0
    for path in files:
        with open(path, "rb") as f:
            raw = f.read()
        digest.update(raw)
        text = remove_overstrike(raw)
        for chunk in text.split(SEPARATOR):
            chunk = chunk.strip(b"%\n")
            if not chunk:
                continue
            (val if n_fortunes % VAL_EVERY == VAL_EVERY - 1 else train).append(chunk)
            n_fortunes += 1
    join = lambda parts: SEPARATOR.join(parts) + SEPARATOR  # noqa: E731
    tr, va = join(train), join(val)
    info = {
        "directory": directory,
        "files": len(files),
        "fortunes": n_fortunes,
        "train_bytes": len(tr),
        "val_bytes": len(va),
        "sha256_of_files": digest.hexdigest(),
    }
    return tr, va, info


def fortunes_list(directory: str = FORTUNE_DIR) -> list[bytes]:
    """The validation fortunes, one per entry (used for prompts that the model never trained on)."""
    _, val, _ = load_corpus(directory)
    return [c for c in val.split(SEPARATOR) if c]
