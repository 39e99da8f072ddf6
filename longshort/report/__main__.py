"""``python -m longshort.report RUN_DIR [--out FILE] [--max-per-group N] [--max-mb MB]``: write the run report."""
from __future__ import annotations

import argparse
import sys

from longshort.report import ReportError, write_report
from longshort.report.episodes import MAX_BYTES, MAX_PER_GROUP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longshort.report",
        description="Write a self-contained HTML report (config, stage times, summary, learning curves, evaluation, "
                    "episode browser) of a training run or an evaluation folder.")
    parser.add_argument("run_dir", help="a run directory (runs/<name>) or an evaluation output folder")
    parser.add_argument("--out", help="where to write the page (default RUN_DIR/report.html)")
    parser.add_argument("--max-per-group", type=int, default=MAX_PER_GROUP,
                        help=f"most episodes embedded per RL step or evaluation set (default {MAX_PER_GROUP})")
    parser.add_argument("--max-mb", type=float, default=MAX_BYTES / 1e6,
                        help=f"size budget of the embedded episodes in MB (default {MAX_BYTES / 1e6:.0f})")
    args = parser.parse_args(argv)
    if args.max_per_group < 1 or args.max_mb <= 0:
        print("error: --max-per-group must be at least 1 and --max-mb above 0", file=sys.stderr)
        return 2
    try:
        path = write_report(args.run_dir, args.out, max_per_group=args.max_per_group,
                            max_bytes=int(args.max_mb * 1e6))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
