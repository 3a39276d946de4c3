"""Benchmarks: `make bench` runs every ``bench/bench_*.py``; each prints one ``BENCH {json}`` line per
measurement with our figures, the anchors' figures measured in the same run, and their ratios."""
