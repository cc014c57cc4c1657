# Two entry points for a fresh machine: `make demo` (train + eval + predict on the bundled MNIST)
# and `make test` (the whole suite). Both are idempotent: the stamp files below make a second run
# install nothing new unless pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/mnist_demo

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -c constraints.txt -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/vitlab train --config mnist --out $(RUN) --overwrite
	$(BIN)/vitlab eval $(RUN)/checkpoints/best.safetensors --data mnist-test --out $(RUN)/eval
	$(BIN)/vitlab predict $(RUN)/checkpoints/best.safetensors --data mnist-test --limit 16 --grid $(RUN)/predictions.png

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) runs
