# Two commands do everything on a fresh machine with Python >= 3.10 and pip:
#   make test   create .venv, install the project with its test extras, run the suite
#   make demo   same install, then the main jobs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format clean bench

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/mobilenet summary --arch v1
	$(BIN)/mobilenet summary --arch v2
	$(BIN)/mobilenet verify --arch all --dtype float64
	$(BIN)/mobilenet verify --arch v2 --backend numba --dtype float64

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_depthwise --batch 1 8 --versions
	$(BIN)/python -m benchmarks.bench_kernels
	$(BIN)/python docs/make_figures.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
