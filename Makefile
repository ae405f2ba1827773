# The two commands of the README: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast bench claims mlflow-ui viz repro pull push

setup:
	@VENV=$(VENV) scripts/ensure_venv.sh

run: setup  ## the whole workflow on the embedded SynthCity data set, then its mIoU table
	$(BIN)/kedro run
	$(BIN)/python -m hmsa.commands.results

test: setup  ## lint, then every test (the slow end-to-end ones included), one pytest worker per core
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -n auto --dist loadfile

test-fast: setup  ## lint and unit tests only
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -n auto --dist loadfile -m "not slow"

bench: setup  ## benchmarks -> data/08_reporting/benchmarks.json
	$(BIN)/python -m hmsa.bench

claims: setup  ## the paper's claims over 3 seeds (conf/claims) -> data/claims/08_reporting/claims/
	$(BIN)/python -m hmsa.commands.claims --seeds 0 1 2

mlflow-ui: setup  ## browse runs and models: kedro-mlflow's UI on the store of mlflow.yml (or $MLFLOW_TRACKING_URI), port 5000
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/kedro mlflow ui $(if $(ENV),--env $(ENV))

viz: setup  ## the pipelines as a static Kedro-Viz site in build/ (namespaces as groups); `kedro viz` serves it live
	$(BIN)/kedro viz build

repro: setup  ## reproduce the DVC pipeline (dvc.yaml) with the project's venv on PATH
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

pull: setup  ## restore every output of dvc.lock from the team's DVC remote (checked first: hmsa.mlops.remote)
	$(BIN)/python -m hmsa.mlops.remote
	$(BIN)/dvc pull

push: setup  ## share this clone's outputs on the team's DVC remote (checked first: hmsa.mlops.remote)
	$(BIN)/python -m hmsa.mlops.remote
	$(BIN)/dvc push
