# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test fetch ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## fetch the offline data sets and weights into the cache (~/.cache/convlab or $$CONVLAB_CACHE)
fetch: $(STAMP)
	$(BIN)/python -m runner.prefetch

## the embedded default job, tracked in ./mlflow.db
run: fetch
	$(BIN)/convlab

## the whole test suite
test: fetch
	$(BIN)/python -m pytest

## the MLflow UI over ./mlflow.db on http://127.0.0.1:5000
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1

clean:
	rm -rf $(VENV) outputs/multirun outputs/train
