"""Speed against the peers, interleaved in one process: the script behind ``vitlab bench`` (same flags).

    .venv/bin/python benchmarks/bench.py --models s,b --batch 1,32 --precision fp32,bf16 --out runs/bench

Everything is in :mod:`vitlab.bench`; ``--help`` lists the flags. docs/benchmarks.md holds a run.
"""

from __future__ import annotations

import sys

from vitlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
