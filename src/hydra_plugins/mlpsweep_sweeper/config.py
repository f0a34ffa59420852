"""`hydra/sweeper: mlpsweep_optuna`, the config Hydra instantiates the sweeper from.

It has no search settings of its own: the search space, sampler, pruner, storage and
budget are the `sweep.*` keys of `conf/sweep/`, read by the engine exactly as
`src/sweep.py` reads them, so both doors take the same keys.
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner runs this module before
# it is in sys.modules, and a dataclass with string annotations looks itself up there.
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class MlpsweepOptunaSweeperConf:
    _target_: str = "hydra_plugins.mlpsweep_sweeper.mlpsweep_sweeper.MlpsweepOptunaSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="mlpsweep_optuna",
    node=MlpsweepOptunaSweeperConf,
    provider="mlpsweep",
)
