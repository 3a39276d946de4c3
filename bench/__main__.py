"""Run every benchmark module (``bench/bench_*.py``), or those named on the command line, each in its own process:
FiftyOne reads its database settings once, at import, and each bench sets its own throwaway database first."""

import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    failed = []
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        code = subprocess.run([sys.executable, "-c", f"import bench.{name} as b; b.main()"]).returncode
        print(f"== {name} took {time.perf_counter() - started:.1f} s" + (f" (exit {code})" if code else ""), flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"== failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
