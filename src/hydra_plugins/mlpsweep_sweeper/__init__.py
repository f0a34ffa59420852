"""The project's Hydra Sweeper: `python src/train.py -m hparams_search=arch` runs the Optuna search.

Hydra finds plugins by importing every module under the `hydra_plugins` namespace package
(`src/hydra_plugins/` has no `__init__.py`, so installed plugins such as the joblib launcher
share the namespace). `config` registers `hydra/sweeper: mlpsweep_optuna` in the ConfigStore;
`mlpsweep_sweeper` holds the Sweeper, which hands the whole search to
`mlpsweep.sweep.launch`, the engine behind `src/sweep.py` and `make sweep`.
"""
