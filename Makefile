# mlpsweep: every target sets itself up (creates .venv and installs on first use).
# Pass Hydra overrides with ARGS="key=value ...", e.g. make sweep ARGS="sweep.n_trials=8".

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
WORKERS ?=
STUDY ?=
PORT ?=
TEST_ARGS ?=
# Test files run in TEST_JOBS processes (pytest-xdist), a file's tests together so its module
# fixtures run once: most tests wait on the start-up of the processes they launch, which two
# at a time overlap (the suite took 11.6 min here, one test at a time 19.7 and 21.9; 2026-12-02).
TEST_JOBS ?= 2

.PHONY: help install train sweep map summary tensorboard dashboard test test-fast bench lint clean

help:
	@echo "make sweep      Optuna search over model.hidden x model.layers (ARGS=..., WORKERS=N)"
	@echo "make map        every architecture of sweep.space once (sweep=grid; ARGS=..., WORKERS=N)"
	@echo "make test       the test suite"
	@echo "make train      one run (the tutorial's by default; ARGS='model.hidden=10 model.layers=2')"
	@echo "make summary    best-trial summary of the latest sweep (STUDY=name or folder)"
	@echo "make tensorboard  TensorBoard over outputs/ on 127.0.0.1 (PORT=..., default 6006)"
	@echo "make dashboard  optuna-dashboard for a study on 127.0.0.1 (STUDY=..., PORT=..., default 8080)"
	@echo "make bench      benchmarks/results.md: a run against the tutorial's loop, batched trials against one at a time"
	@echo "make lint       ruff"
	@echo "make clean      remove .venv and caches (outputs/ is kept)"

# torch first and pinned: the CPU wheel on these machines; an unpinned torch pulls CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,dashboard]'
	touch $@

install: $(STAMP)

train: $(STAMP)
	$(PY) src/train.py $(ARGS)

sweep: $(STAMP)
	$(PY) src/sweep.py $(if $(WORKERS),sweep.workers=$(WORKERS)) $(ARGS)

map: $(STAMP)
	$(PY) src/sweep.py sweep=grid $(if $(WORKERS),sweep.workers=$(WORKERS)) $(ARGS)

summary: $(STAMP)
	$(PY) src/summarize.py $(STUDY) $(ARGS)

# A run's loss curve has an events file of its own beside the logger's; --reload_multifile
# keeps both live where TensorBoard falls back to its legacy loader (that follows the newest).
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs --reload_multifile=true --host 127.0.0.1 --port $(or $(PORT),6006)

dashboard: $(STAMP)
	$(PY) src/dashboard.py $(STUDY) $(if $(PORT),--port $(PORT))

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(TEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile -m "not slow" $(TEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run.py $(ARGS)
	$(PY) benchmarks/step_bench.py --write
	$(PY) benchmarks/batch_bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
