"""`make bench`: every benchmark in turn (`python -m bench`); `python -m bench.<name>` runs one."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["bench.kv", "bench.agents", "bench.jobs", "bench.documents", "bench.events", "bench.workers"]
"""Each module has `main(argv) -> int`; a new contract's benchmark adds its module here."""
BENCHMARKS.append("bench.events_queries")  # analytics, search and filtered queries over 1M events


def main() -> int:
    status = 0
    for name in BENCHMARKS:
        print(f"\n== {name} ==", flush=True)
        status |= importlib.import_module(name).main([])
    return status


if __name__ == "__main__":
    sys.exit(main())
