"""What "fits" means (`mlpsweep.fit_rule`) and the summary's map of which architectures fit.

The map, the per-depth table, coverage and repeats are checked on synthetic studies: trials
added with Optuna's API and trial folders whose metrics.json the test writes, so every
member's train/acc and val/acc is chosen by the test and the expected answer is known.
"""

from __future__ import annotations

import torch

from mlpsweep.fit_rule import FIT_VAL_ACC, fitting_members, member_fits
from mlpsweep.model import MLP

# ---- the definition ------------------------------------------------------------------


def test_a_member_with_perfect_val_acc_but_one_training_point_wrong_does_not_fit() -> None:
    assert not member_fits(0.99, 1.0)
    assert member_fits(1.0, 0.99) and not member_fits(1.0, 0.9899)
    assert fitting_members([1.0, 0.99, 1.0, 1.0], [1.0, 1.0, 0.98, 0.995]) == 2
    assert FIT_VAL_ACC == 0.99


def test_the_model_logs_the_same_rule_as_a_fit_rate_over_members() -> None:
    per_member = {
        "train/acc": torch.tensor([1.0, 0.99, 1.0, 1.0]),
        "val/acc": torch.tensor([1.0, 1.0, 0.98, 0.995]),
    }
    assert MLP.fit_rate(per_member, 0.99).item() == 0.5
    assert MLP.fit_rate(per_member, 0.97).item() == 0.75
