#!/usr/bin/python3
"""The pictures of a generation live in the Python client (`samplerd.plots`, so any recorded generation can be
drawn with `python -m samplerd.plots RECORD.jsonl --out X.png`); this module keeps the example's imports and its
command working from a checkout:

    /usr/bin/python3 examples/torch_host/plots.py RECORD.jsonl --out picture.png
"""
import os
import sys

_CLIENT_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python")
)
if os.path.isdir(_CLIENT_DIR) and _CLIENT_DIR not in sys.path:
    sys.path.insert(0, _CLIENT_DIR)

from samplerd.plots import *  # noqa: E402,F401,F403
from samplerd.plots import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
