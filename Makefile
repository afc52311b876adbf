# textcomp: `make all` runs the whole competition flow; `make help` lists the targets.
# Variables passed to every stage:
#   DATA=path/to/folder   a competition folder (train.csv, test.csv, sample_submission.csv);
#                         default data/raw, or the embedded default when that is empty
#   CONFIG=file.yaml      a YAML file of diffs over configs/base.yaml (e.g. configs/cpu.yaml)
#   SET="k=v k=v"         overrides such as SET="train.lr=2e-5 folds.seed=7"
PYTHON ?= python3
DATA ?=
CONFIG ?=
SET ?=
FOLDS ?=

SETS = $(strip $(SET) $(if $(FOLDS),train.folds=[$(FOLDS)]))
STAGE_ARGS = $(if $(DATA),--data $(DATA)) $(if $(CONFIG),--config $(CONFIG)) $(if $(SETS),--set $(SETS))
RUN = $(PYTHON) -m pipeline
STAMP = .make/installed

.DEFAULT_GOAL := help
.PHONY: help setup all inspect clean folds test test-slow lint clobber

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@# torch first: a bare `torch` requirement would pull a multi-GB CUDA build; keep one already there
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p $(dir $@) && touch $@

setup: $(STAMP) ## install the package and its dependencies

all: $(STAMP) inspect clean folds ## the whole flow on DATA (default: the embedded competition)

inspect: $(STAMP) ## data report -> reports/inspect.md
	$(RUN) inspect $(STAGE_ARGS)

clean: $(STAMP) ## cleaned train/test -> data/interim/
	$(RUN) clean $(STAGE_ARGS)

folds: $(STAMP) clean ## stratified grouped folds -> data/processed/folds.csv
	$(RUN) folds $(STAGE_ARGS)

test: $(STAMP) ## the fast test tier (no GPU, no network)
	$(PYTHON) -m pytest -q

test-slow: $(STAMP) ## the slow tier: end-to-end runs on real data
	$(PYTHON) -m pytest -q -m "slow and not gpu"

lint: $(STAMP) ## ruff over pipeline/ and tests/
	$(PYTHON) -m ruff check pipeline tests benchmarks

clobber: ## delete every generated artifact (never data/raw)
	rm -rf data/interim data/processed data/embedded data/holdout reports models ensembles submissions tune configs/generated
