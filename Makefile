# loan-ews front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
EWS := $(VENV)/bin/ews
STAMP := $(VENV)/.installed
export UV_PYTHON_DOWNLOADS := never
# compile site-packages once at install: each `ews` process then starts ~2x faster (no .pyc otherwise
# where PYTHONDONTWRITEBYTECODE is set, as on CI)
export UV_COMPILE_BYTECODE := 1
export OMP_WAIT_POLICY ?= PASSIVE

BOOK ?= data/demo-book
LOANS ?= 20000
MONTHS ?= 48
SEED ?= 7

.PHONY: help install demo test test-fast bench lint format book validate summary features train promote report serve score clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check uv==0.13.9

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with the locked dependencies (uv.lock)

demo: $(STAMP) ## Generate the demo book, validate it, train, promote and report the PD model, score the book
	$(EWS) book generate --loans $(LOANS) --months $(MONTHS) --seed $(SEED) --out $(BOOK) --pit-spec models/pd_90d_12m.yaml
	$(EWS) book validate $(BOOK)
	$(EWS) book summary $(BOOK)
	$(EWS) train --spec models/pd_90d_12m.yaml --book $(BOOK)
	$(EWS) promote --model loan-ews-pd-12m --book $(BOOK)
	$(EWS) report --model loan-ews-pd-12m
	$(EWS) score-book --book $(BOOK) --as-of $(or $(AS_OF),2025-12) --out data/scores

test: $(STAMP) ## Run the test suite (both cores; the demo book's tests on one worker, built once: tests/conftest.py)
	$(VENV)/bin/pytest -q -n 2 --dist loadgroup

test-fast: $(STAMP) ## The fast loop: every test that trains no model, starts no server and kills no process (under a minute)
	$(VENV)/bin/pytest -q -m "not slow" -n 2  # pytest-xdist: both cores (each worker builds its own fixtures)

bench: $(STAMP) ## Run the benchmarks (large books; prints time and memory)
	$(VENV)/bin/python -m bench

lint: $(STAMP) ## Ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

book: $(STAMP) ## Generate a book: make book BOOK=dir LOANS=n MONTHS=m SEED=s PROFILE=clean|card|mixed
	$(EWS) book generate --loans $(LOANS) --months $(MONTHS) --seed $(SEED) --profile $(or $(PROFILE),clean) --out $(BOOK)

validate: $(STAMP) ## Validate a book: make validate BOOK=dir
	$(EWS) book validate $(BOOK)

summary: $(STAMP) ## Summarise a book: make summary BOOK=dir
	$(EWS) book summary $(BOOK)

features: $(STAMP) ## Build the training panel: make features BOOK=dir FROM=2023-01 TO=2025-12
	$(EWS) features build --book $(BOOK) --from $(or $(FROM),2023-01) --to $(or $(TO),2025-12) --out data/panel.parquet

train: $(STAMP) ## Train and register a model: make train SPEC=models/pd_90d_12m.yaml BOOK=dir
	$(EWS) train --spec $(or $(SPEC),models/pd_90d_12m.yaml) --book $(BOOK)

promote: $(STAMP) ## Gate the newest model version against the champion: make promote BOOK=dir
	$(EWS) promote --model $(or $(MODEL),loan-ews-pd-12m) --book $(BOOK)

report: $(STAMP) ## Validation summary of the champion: make report MODEL=name[@alias|:version]
	$(EWS) report --model $(or $(MODEL),loan-ews-pd-12m)

serve: $(STAMP) ## Run the scoring service on 127.0.0.1:3000 with the champion and the demo book
	$(EWS) serve --book $(BOOK) --port $(or $(PORT),3000)

score: $(STAMP) ## Nightly batch: make score AS_OF=2025-12 BOOK=dir OUT=data/scores
	$(EWS) score-book --book $(BOOK) --as-of $(or $(AS_OF),2025-12) --out $(or $(OUT),data/scores)

clean: ## Remove generated data and local model state (keeps specs)
	rm -rf data models/mlflow.db models/mlartifacts models/reports .pytest_cache
