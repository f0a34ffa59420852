"""`python src/summarize.py [study folder or name] [--threshold 0.99] [--storage URL]`.

Prints the summary of a sweep (the latest under outputs/sweeps by default) and writes, in
its folder: summary.md, trials.csv, plots/*.png, and a TensorBoard entry under summary/.
It reads only the study's storage and trial folders, so it works while a sweep runs and
after one was killed. A password-protected storage (study.json says so) needs its URL
again: --storage 'postgresql://user:PASSWORD@host/db' or the MLPSWEEP_STORAGE variable.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mlpsweep.cli import OneLineParser, fail


def parse_args(argv: list[str]) -> argparse.Namespace:
    from mlpsweep.summary import DEFAULT_SWEEPS_DIR, DEFAULT_THRESHOLD

    parser = OneLineParser(
        prog="summarize.py", description=__doc__.split("\n\n")[1] if __doc__ else None
    )
    parser.add_argument(
        "study", nargs="?", help="study folder or name under --sweeps-dir (default: the latest)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="the fit bar: a member fits with train/acc 1 and val/acc >= it "
        f"(default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--storage", help="storage URL, for a study whose password study.json does not keep"
    )
    parser.add_argument(
        "--sweeps-dir",
        type=Path,
        default=DEFAULT_SWEEPS_DIR,
        help="where sweeps live (default %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from mlpsweep.storage import scrub
    from mlpsweep.summary import SummaryError, summarize_study

    try:
        summary, text = summarize_study(args.study, args.threshold, args.storage, args.sweeps_dir)
    except SummaryError as error:
        return fail(scrub(str(error)))
    except KeyboardInterrupt:
        return fail("interrupted", code=130)
    folder = summary.source.folder
    # In the printed text, a Markdown image line becomes the path of its picture.
    image_line = re.compile(r"^!\[[^\]]*\]\(([^)]*)\)$", re.MULTILINE)
    print(image_line.sub(lambda match: f"-> {folder / match.group(1)}", text), end="")
    print(
        f"written: {folder / 'summary.md'}, {folder / 'trials.csv'}, "
        f"{len(summary.pictures)} pictures in {folder / 'plots'}/, "
        f"TensorBoard {folder / 'summary'}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
