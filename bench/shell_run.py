"""Wall time of one small `run_shell` call (``echo hi > a`` in a fresh work dir), median of N.

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
    args = parser.parse_args()
    import autolearn.sandbox as sb

    times = []
    with tempfile.TemporaryDirectory(prefix="autolearn-bench-") as tmp:
        for index in range(args.runs + 1):
            work = Path(tmp) / f"w{index}"
            work.mkdir()
            (work / "input.txt").write_text("some input\n")
            started = time.perf_counter()
            result = sb.run_shell(args.script, work)
            elapsed = time.perf_counter() - started
            if not result.passed or (work / "a").read_text() != "hi\n":
                raise SystemExit(f"error: the shell run failed: {result}")
            if index:  # the first run pays for isolation-level detection
                times.append(elapsed * 1000)
    report = {
        "code": str(Path(sb.__file__).parents[2]),
        "isolation": sb.isolation_level(),
        "runs": args.runs,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
