"""Wall time of one small `run_shell` call (``echo hi > a`` in a fresh work dir), median of N
(``--write-mb`` adds a file of that size, to see the cost of copying it back).

Measures the cost a shell run pays for its sandbox: a fresh bubblewrap per call, plus (since
the capped work dir) the copy into the size-capped tmpfs and back. Run it against two checkouts
side by side by putting each on ``PYTHONPATH`` in turn, alternating, e.g.

    for i in 1 2 3; do for tree in /tmp/base .; do
        PYTHONPATH=$tree python bench/shell_run.py --runs 20; done; done
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    """Time `--runs` shell runs and print one JSON line (median, min, max in ms)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--script", default="echo hi > a")
    parser.add_argument("--write-mb", type=int, default=0, help="also write a file of this size")
    args = parser.parse_args()
    script = args.script + (f"\nhead -c {args.write_mb}M /dev/zero > big" if args.write_mb else "")
    import autolearn.sandbox as sb

    times = []
    with tempfile.TemporaryDirectory(prefix="autolearn-bench-") as tmp:
        for index in range(args.runs + 1):
            work = Path(tmp) / f"w{index}"
            work.mkdir()
            (work / "input.txt").write_text("some input\n")
            started = time.perf_counter()
            result = sb.run_shell(
                script, work, limits=sb.Limits(file_size_mb=max(32, args.write_mb))
            )
            elapsed = time.perf_counter() - started
            if not result.passed or (work / "a").read_text() != "hi\n":
                raise SystemExit(f"error: the shell run failed: {result}")
            if index:  # the first run pays for isolation-level detection
                times.append(elapsed * 1000)
    report = {
        "code": str(Path(sb.__file__).parents[2]),
        "isolation": sb.isolation_level(),
        "runs": args.runs,
        "write_mb": args.write_mb,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
