"""`--help`'s config with each key's meaning: the comments of the yaml files in `conf/`.

The yaml files are where each key is explained (`hidden: 20  # units per hidden layer`), but
a composed config has lost its comments, so `--help` listed bare keys. This reads the
comments back, by dotted path, and appends each to its key's line of the printed config.
A group's own file (`model/mlp.yaml` for `model.*`) explains its keys first; files of
`# @package _global_` (`sweep/default.yaml`, experiments) add the keys nothing else
explains, such as `sweep.*`. Only comments on a key's line (and the comment lines that
continue it, aligned under it) count; block comments above a key are about the file.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mlpsweep.config import CONF_DIR

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
_COMMENT = re.compile(r"\s#\s?")  # a comment starts after whitespace (a value may hold '#')
_GLOBAL = "# @package _global_"
COMMENT_COLUMN = 36  # where the comments line up (a longer line takes two spaces)


def _file_comments(path: Path, prefix: str) -> dict[str, str]:
    """`{dotted path: comment}` for the keys of one yaml file, under `prefix`."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: tuple[str, int] | None = None  # (path, column of its '#'), for continuation lines
    for line in path.read_text().splitlines():
        continued = re.match(r"^( *)#\s?(.*)$", line)
        if continued and last and len(continued.group(1)) == last[1]:
            comments[last[0]] += " " + continued.group(2).strip()
            continue
        last = None
        found = _KEY_LINE.match(line)
        if not found:
            continue
        indent = len(found.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, found.group("key")))
        if found.group("key") == "defaults" and indent == 0:
            continue
        rest = found.group("rest")
        comment = _COMMENT.search(" " + rest)
        if comment:
            dotted = prefix + ".".join(key for _, key in stack)
            comments[dotted] = rest[comment.end() - 1:].strip()
            last = (dotted, len(line) - len(rest) + comment.start())
    return comments


@functools.cache
def key_comments(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """Every commented key of `conf_dir`, by dotted path (first found wins, see the module)."""
    own: list[tuple[Path, str]] = [(conf_dir / "train.yaml", "")]
    global_files: list[tuple[Path, str]] = []
    for path in sorted(conf_dir.glob("*/**/*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group.startswith("hydra"):
            continue
        is_global = path.read_text().lstrip().startswith(_GLOBAL)
        (global_files if is_global else own).append(
            (path, "" if is_global else group.replace("/", ".") + ".")
        )
    comments: dict[str, str] = {}
    for path, prefix in [*own, *global_files]:
        for dotted, comment in _file_comments(path, prefix).items():
            comments.setdefault(dotted, comment)
    return comments


def commented_yaml(cfg: DictConfig, resolve: bool = False) -> str:
    """`OmegaConf.to_yaml(cfg)` with each key's meaning appended to its line."""
    comments = key_comments()
    lines = []
    stack: list[tuple[int, str]] = []
    for line in OmegaConf.to_yaml(cfg, resolve=resolve).splitlines():
        found = _KEY_LINE.match(line)
        if found:
            indent = len(found.group("indent"))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, found.group("key")))
            comment = comments.get(".".join(key for _, key in stack))
            if comment:
                line = f"{line.ljust(COMMENT_COLUMN - 2)}  # {comment}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def commented_config_resolver(*, _root_: DictConfig) -> str:
    """`${mlpsweep.commented_config:}` in conf/hydra/help: the job's config (Hydra's own
    `hydra:` node left out, as Hydra's `$CONFIG` does), commented; `$` doubled because
    Hydra renders the help through `string.Template`."""
    job = OmegaConf.masked_copy(_root_, [key for key in _root_ if key != "hydra"])
    return commented_yaml(job).replace("$", "$$")
