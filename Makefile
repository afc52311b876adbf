# textcomp: `make all` runs the whole competition flow; `make help` lists the targets.
# Variables passed to every stage:
#   DATA=path/to/folder   a competition folder (train.csv, test.csv, sample_submission.csv);
#                         default data/raw, or the embedded default when that is empty
#   CONFIG=file.yaml      a YAML file of diffs over configs/base.yaml (e.g. configs/cpu.yaml)
#   SET="k=v k=v"         overrides such as SET="train.lr=2e-5 folds.seed=7"
PYTHON ?= python3
DATA ?=
PROFILE ?= configs/cpu.yaml
CONFIG ?=
SET ?=
FOLDS ?=

SETS = $(strip $(SET) $(if $(FOLDS),train.folds=[$(FOLDS)]))
STAGE_ARGS = $(if $(DATA),--data $(DATA)) $(if $(PROFILE),--config $(PROFILE)) $(if $(CONFIG),--config $(CONFIG)) \
             $(if $(SETS),--set $(SETS))
RUN = $(PYTHON) -m pipeline
STAMP = .make/installed

.DEFAULT_GOAL := help
.PHONY: help setup setup-apertium all inspect clean folds augment select tune train train-plan lr-find ensemble submit report kaggle-submit \
        test test-slow bench lint clobber

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# torch first: a bare `torch` requirement would pull a multi-GB CUDA build; keep one already there
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

setup: $(STAMP) ## install the package and its dependencies

all: $(STAMP) inspect clean folds augment select tune train-plan ensemble submit report ## the whole flow on DATA (default: the embedded competition)

inspect: $(STAMP) ## data report -> reports/inspect.md
	$(RUN) inspect $(STAGE_ARGS)

clean: $(STAMP) ## cleaned train/test -> data/interim/
	$(RUN) clean $(STAGE_ARGS)

folds: $(STAMP) clean ## stratified grouped folds -> data/processed/folds.csv
	$(RUN) folds $(STAGE_ARGS)

augment: $(STAMP) ## back-translation / nlpaug copies of train rows -> data/interim/augmented/
	$(RUN) augment $(STAGE_ARGS)

setup-apertium: ## install Debian's apertium + the eng-spa pair (offline back-translation engine)
	@command -v apertium >/dev/null && apertium -l | grep -q eng-spa && echo "apertium eng-spa: installed" || \
	  { command -v apt-get >/dev/null && apt-get install -y -q apertium apertium-eng-spa; } || \
	  echo "apertium could not be installed here (needs apt-get and root); the marian engine needs no system package"

select: $(STAMP) ## screen candidate models -> reports/model_selection.csv, reports/selected.json
	$(RUN) select $(STAGE_ARGS)

tune: $(STAMP) ## Optuna search -> tune/<run>/, configs/generated/, reports/plan.json
	$(RUN) tune $(STAGE_ARGS)

train: $(STAMP) ## train one config (CONFIG=configs/exp/<run>.yaml; FOLDS=0,1 for a subset) -> models/<run>/
	$(RUN) train $(STAGE_ARGS)

train-plan: $(STAMP) ## train every run in reports/plan.json (what select/tune chose)
	$(RUN) train --plan reports/plan.json $(STAGE_ARGS)

lr-find: $(STAMP) ## LR range test -> reports/lr_find.png with a suggested LR
	$(RUN) lr-find $(STAGE_ARGS)

ensemble: $(STAMP) ## blend the runs' OOF -> ensembles/blend/
	$(RUN) ensemble $(STAGE_ARGS)

submit: $(STAMP) ## write and validate submissions/submission.csv
	$(RUN) submit $(STAGE_ARGS)

report: $(STAMP) ## one page for the competition + the tuning doctor -> reports/index.{md,html}
	$(RUN) report $(STAGE_ARGS)

kaggle-submit: ## submit with the official kaggle CLI: make kaggle-submit COMPETITION=<slug> MESSAGE="..."
	@command -v kaggle >/dev/null || { echo "error: the kaggle CLI is not installed (pip install kaggle)"; exit 2; }
	@test -n "$(COMPETITION)" || { echo "error: set COMPETITION=<competition slug>"; exit 2; }
	@test -f submissions/submission.csv || { echo "error: submissions/submission.csv not found; run make submit"; exit 2; }
	@test -f $${KAGGLE_CONFIG_DIR:-$$HOME/.kaggle}/kaggle.json || test -n "$$KAGGLE_KEY" || \
	  { echo "error: no Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)"; exit 2; }
	kaggle competitions submit -c $(COMPETITION) -f submissions/submission.csv \
	  -m "$(MESSAGE) (CV $$($(PYTHON) -c "import json;print(round(json.load(open('submissions/submission.json'))['cv'],4))"))"

bench: $(STAMP) ## benchmarks -> benchmarks/results/latest.json and BENCHMARKS.md
	$(PYTHON) benchmarks/run.py

test: $(STAMP) ## the fast test tier (no GPU, no network)
	$(PYTHON) -m pytest -q

test-slow: $(STAMP) ## the slow tier: end-to-end runs on real data
	$(PYTHON) -m pytest -q -m "slow and not gpu"

lint: $(STAMP) ## ruff over pipeline/ and tests/
	$(PYTHON) -m ruff check pipeline tests benchmarks

clobber: ## delete every generated artifact (never data/raw)
	rm -rf data/interim data/processed data/embedded data/holdout reports models ensembles submissions tune configs/generated
