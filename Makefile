# Two commands do everything on a fresh machine with Python >= 3.10 and pip:
#   make test   create .venv, install the project with its test extras, run the suite
#   make demo   same install, then the main jobs (short digits and detection training runs included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format clean bench bench-quick mutants

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
	rm -rf runs/demo-digits
	$(BIN)/mobilenet train --arch v2 --width-mult 0.5 --resolution 32 --data digits --backend numba \
		--epochs 4 --seed 0 --out runs/demo-digits
	$(BIN)/mobilenet evaluate --checkpoint runs/demo-digits/checkpoint.npz
	$(BIN)/mobilenet export --checkpoint runs/demo-digits/checkpoint.npz --onnx runs/demo-digits/model.onnx --resolution 32
	$(BIN)/mobilenet verify --onnx runs/demo-digits/model.onnx
	$(BIN)/mobilenet convert runs/demo-digits/checkpoint.npz --out runs/demo-digits/weights.pth
	$(BIN)/mobilenet bench --arch v2 --width-mult 0.5 --resolution 128 --backends numba,torch,onnxruntime
	rm -rf runs/demo-digits-int8
	$(BIN)/mobilenet quantize --checkpoint runs/demo-digits/checkpoint.npz --out runs/demo-digits-int8
	$(BIN)/mobilenet evaluate --checkpoint runs/demo-digits-int8/checkpoint.npz
	$(BIN)/mobilenet export --checkpoint runs/demo-digits-int8/checkpoint.npz --onnx runs/demo-digits-int8/model.onnx
	$(BIN)/mobilenet verify --onnx runs/demo-digits-int8/model.onnx
	$(BIN)/mobilenet bench --backends numba,numba-int8,torch-int8,onnxruntime-int8
	$(BIN)/mobilenet summary --arch ssdlite --width-mult 0.5 --resolution 128 --num-classes 7
	rm -rf runs/demo-detect runs/demo-scenes
	@echo "a short detection run (20 steps): the documented default trains for 2232"
	$(BIN)/mobilenet detect train --data scenes --train-size 320 --test-size 64 --epochs 2 --backend numba \
		--seed 0 --out runs/demo-detect
	$(BIN)/mobilenet detect scenes --count 4 --seed 7 --out runs/demo-scenes
	$(BIN)/mobilenet detect predict --checkpoint runs/demo-detect/checkpoint.npz \
		--image runs/demo-scenes/images/000000.png --min-score 0.15 --out runs/demo-detect/found.png

# Each side alone in its process, alternating rounds (~20 min on 2 cores); bench-quick: a few minutes.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.profile_step
	$(BIN)/python -m benchmarks.bench_kernels
	$(BIN)/python -m benchmarks.perf
	$(BIN)/python -m benchmarks.int8
	$(BIN)/python docs/make_figures.py

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick
	$(BIN)/python -m benchmarks.perf --quick
	$(BIN)/python docs/make_figures.py

# The mutation check (slow, outside make test): each curated bug must fail its module's tests.
mutants: $(STAMP)
	$(BIN)/python -m tests.mutants

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis runs
