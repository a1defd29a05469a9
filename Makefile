# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-all fetch ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## fetch the offline data sets and weights into the cache (~/.cache/convlab or $$CONVLAB_CACHE)
fetch: $(STAMP)
	$(BIN)/python -m runner.prefetch

## the embedded default job, tracked in ./mlflow.db: train the small convnet, visualize it, Grad-CAM MobileNetV2
run: fetch
	$(BIN)/convlab
	$(BIN)/convlab task=activations model=from_run model.run_id=latest
	$(BIN)/convlab task=filters model=from_run model.run_id=latest task/recipe=lucid \
	    'task.layers=[conv2d_1,conv2d_2,conv2d_3,conv2d_4]' task.num_filters=32
	$(BIN)/convlab task=gradcam model=from_run model.run_id=latest
	$(BIN)/convlab experiment=gradcam

## the test suite but its slowest end-to-end runs (marker `slow`) on two workers (pytest-xdist), ~8 min here; `make test-all`: all of it
test: fetch
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

test-all: fetch
	$(BIN)/python -m pytest -n 2 --dist loadfile

## the MLflow UI over ./mlflow.db on http://127.0.0.1:5000
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1

clean:
	rm -rf $(VENV) outputs/multirun outputs/train

# ------------------------------------------------------------------ tracking server (docs/infrastructure.md)
SERVER_PORT ?= 5000
SERVER_STAMP := $(VENV)/.server-stamp

.PHONY: server server-stop

$(SERVER_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,server]'
	touch $@

## an MLflow tracking server on PostgreSQL at http://127.0.0.1:$(SERVER_PORT), artifacts proxied; then `convlab tracking=server`
server: $(SERVER_STAMP)
	CONVLAB_SERVER_PORT=$(SERVER_PORT) VENV=$(VENV) bash .ci/server.sh start

## stop what `make server` started (the mlflow server by its pid; PostgreSQL if it was started for it)
server-stop:
	CONVLAB_SERVER_PORT=$(SERVER_PORT) VENV=$(VENV) bash .ci/server.sh stop
