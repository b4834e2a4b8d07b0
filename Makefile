# The two commands of the README:
#   make reproduce   the whole mini-world reproduction (builds the world, runs every notebook, writes results/)
#   make test        the test suite (unit tests, notebooks under nbval, a papermill run)
# Both create the virtual environment .venv on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: reproduce stability test bench clean-cache

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is a CPU build; an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev,bench]"
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m sepo.reproduce

# the same reproduction under another CPU kernel set (torch's portable DEFAULT kernels instead of AVX2: float
# rounding as on another machine), from an empty cache of its own (cache keys include the kernel set); its
# claims go beside this run's in results/claims.md
stability: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PY) -m sepo.reproduce --results build/default/results
	$(PY) -m sepo.claims --add-run build/default/results

test: $(STAMP)
	$(PY) -m pytest -q tests --nbval-lax notebooks

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean-cache:
	rm -rf cache
