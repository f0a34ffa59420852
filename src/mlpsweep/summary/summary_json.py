"""summary.json: the probability answer for programs, beside summary.md.

The shape (issue 17) is fixed; a width beyond the space, or an interval's end beyond it, is
null. Written atomically like every summary output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlpsweep.summary.probability import DepthAnswer
from mlpsweep.summary.study_summary import StudySummary


def _ci(low: float, high: float) -> list[float]:
    return [round(low, 6), round(high, 6)]


def answer_json(answer: DepthAnswer) -> dict[str, Any]:
    return {
        "layers": answer.layers,
        "facet": dict(answer.facet),
        "first_fit_width": answer.first_fit_width,
        "typical_width": answer.typical.width,
        "typical_ci": answer.typical.ci,
        "reliable_width": answer.reliable.width,
        "reliable_ci": answer.reliable.ci,
        "cells": [
            {"hidden": cell.hidden, "members": cell.members, "fits": cell.fits,
             "p": round(cell.p, 6), "ci": _ci(*cell.ci)}
            for cell in answer.cells
        ],
    }


def summary_json(summary: StudySummary) -> dict[str, Any]:
    probability = summary.probability
    return {
        "coverage": {"trained": summary.coverage.trained, "total": summary.coverage.total},
        "capacity_floor": dict(probability.floor),
        "answers": [answer_json(answer) for answer in probability.answers],
    }


def write_summary_json(summary: StudySummary, path: Path) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(summary_json(summary), indent=1) + "\n")
    os.replace(partial, path)
