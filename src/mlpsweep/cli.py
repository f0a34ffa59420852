"""What the entry points share: argument handling and one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from omegaconf import DictConfig


def fail(message: str, code: int = 2) -> int:
    """Print `error: message` on stderr and return the exit code to use."""
    print(f"error: {message}", file=sys.stderr)
    return code


def config_or_exit(argv: Sequence[str], usage: str, config_name: str = "train") -> DictConfig:
    """Compose the config from Hydra overrides; `--help`/`--cfg` print and exit.

    Errors are the user's: they end the process with one line and exit code 2.
    """
    from mlpsweep.config import ConfigError, compose, to_yaml
    from mlpsweep.key_help import commented_yaml

    args = list(argv)
    wants_help = any(a in ("-h", "--help") for a in args)
    wants_cfg = "--cfg" in args
    overrides = [a for a in args if a not in ("-h", "--help", "--cfg")]
    unknown_flags = [a for a in overrides if a.startswith("-")]
    if unknown_flags:
        sys.exit(
            fail(f"unknown option {unknown_flags[0]!r}: use key=value overrides, --cfg or --help")
        )
    try:
        cfg = compose(overrides, config_name)
    except ConfigError as error:
        sys.exit(fail(str(error)))
    if wants_help:  # each key with its meaning; --cfg stays plain yaml, for programs
        print(usage.strip(), "\n\nConfig (override any key as key=value; after each key, what "
              "it means):\n", sep="")
        print(commented_yaml(cfg), end="")
        sys.exit(0)
    if wants_cfg:
        print(to_yaml(cfg), end="")
        sys.exit(0)
    compiled_step_or_exit()
    return cfg


def compiled_step_or_exit() -> None:
    """Find (or build) the compiled training step before any work starts, so that a missing
    compiler or an unwritable cache is one `error:` line and exit 1, not a traceback from
    inside a worker or a run."""
    from mlpsweep import native

    try:
        native.load()
    except native.NativeBuildError as error:
        sys.exit(fail(str(error), code=1))


def stderr_is_terminal() -> bool:
    """Progress bars only on a terminal: in a log file each redraw is a line of its own."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class OneLineParser(argparse.ArgumentParser):
    """argparse for src/summarize.py and src/dashboard.py: a usage mistake is one `error:`
    line, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
