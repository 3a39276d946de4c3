"""Run every benchmark module (``bench/bench_*.py``), or those named on the command line."""

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    if not names:
        print("No benchmarks yet: they arrive with the embedding, curation, mislabel and Label Studio features.")
        return 0
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
        print(f"== {name} took {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
