"""What the trials of one batch share: every setting but the architecture, and so one schedule.

Stdlib and OmegaConf only, so a sweep worker can group its trials by these keys without
loading Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The only keys in which a batch's trials may differ.
BATCHED_KEYS = ("model.hidden", "model.layers")


def check_batchable(cfgs: Sequence[DictConfig]) -> None:
    """ValueError naming the first key, other than hidden and layers, in which a trial differs."""
    if not cfgs:
        raise ValueError("a batch needs at least one trial config")
    first = dict(config_leaves(cfgs[0]))
    for index, cfg in enumerate(cfgs[1:], start=1):
        other = dict(config_leaves(cfg))
        for key in [*first, *(k for k in other if k not in first)]:
            if key not in BATCHED_KEYS and first.get(key) != other.get(key):
                raise ValueError(
                    f"trial {index} differs from trial 0 in {key} "
                    f"({other.get(key)!r} vs {first.get(key)!r}); "
                    f"the trials of a batch may differ only in {', '.join(BATCHED_KEYS)}"
                )


def config_leaves(cfg: DictConfig) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of the resolved config, in the config's order."""
    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), node

    yield from walk(OmegaConf.to_container(cfg, resolve=True), "")


@dataclass(frozen=True)
class Schedule:
    """The batch's shared trainer settings the epoch loop reads, as plain values: an
    OmegaConf attribute costs about 20 us, and the loop read six an epoch (1 s of a
    7000-epoch batch). When to write curves and pictures is their callbacks' own `due`."""

    max_epochs: int
    val_every: int
    fit_val_acc: float
    stop_at_val_acc: float | None

    @classmethod
    def of(cls, cfg: DictConfig) -> Schedule:
        trainer = cfg.trainer
        return cls(
            trainer.max_epochs, trainer.val_every, trainer.fit_val_acc, trainer.stop_at_val_acc
        )
