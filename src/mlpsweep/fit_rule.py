"""What "fits" means, once, for the model's `fit_rate`, the stop rule and the summary.

A *member* (one initialisation of an ensemble) fits when it classifies every training point
correctly (train/acc = 1.0: all 100 points) **and** reaches `val_acc` on the dense
validation grid between them. val/acc alone is not enough: a member can score 0.995 on the
grid while still misplacing one of the training points the tutorial asks to fit. An
architecture's *fit rate* is its fitting members over its members.

The functions take plain floats, numpy arrays or torch tensors alike (`>=` and `&` are
elementwise for arrays), so the training loop and the summary share the very same test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

# The validation-grid bar of the definition (`trainer.fit_val_acc`, `summarize.py --threshold`).
FIT_VAL_ACC = 0.99
# Every one of the training points: an accuracy over 100 points is exactly 1.0 when all are right.
FIT_TRAIN_ACC = 1.0

DEFINITION = (
    "A member (one initialisation) *fits* when it classifies every training point correctly "
    "(train/acc = 1.0) and reaches val/acc >= {threshold:g} on the validation grid; an "
    "architecture's *fit rate* is its fitting members out of its members."
)

Accuracy = TypeVar("Accuracy")


def member_fits(train_acc: Accuracy, val_acc: Accuracy, threshold: float = FIT_VAL_ACC) -> Accuracy:
    """True where a member fits: one bool for floats, an elementwise mask for arrays/tensors."""
    return (train_acc >= FIT_TRAIN_ACC) & (val_acc >= threshold)  # type: ignore[operator]


def fitting_members(
    train_accs: Sequence[float], val_accs: Sequence[float], threshold: float = FIT_VAL_ACC
) -> int:
    """How many members fit, from the per-member values a run folder's metrics.json keeps."""
    if len(train_accs) != len(val_accs):
        raise ValueError(f"{len(train_accs)} train/acc values for {len(val_accs)} val/acc values")
    pairs = zip(train_accs, val_accs, strict=True)
    return sum(1 for train, val in pairs if member_fits(train, val, threshold))


def definition(threshold: float = FIT_VAL_ACC) -> str:
    """The definition as one sentence, with the bar in use."""
    return DEFINITION.format(threshold=threshold)
