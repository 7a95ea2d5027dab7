# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install torch first (a CPU build where one is offered
# locally), then the package with its dependencies.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-tools lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q "torch>=2.4"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m mrf_monai.demo --out demo_output

# Optional test tools (the DICOM validator dciodvfy from Debian's dicom3tools): installed with
# apt-get when missing and possible (root or passwordless sudo); never fails the build, the
# tests needing a missing tool skip and say why. MRF_TEST_TOOLS=0 skips this step.
test-tools:
	@bash .ci/install-test-tools

test: install test-tools
	$(BIN)/python -m ruff check mrf_monai tests benchmarks
	$(BIN)/python -m pytest -q tests

bench: install
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf demo_output runs .pytest_cache
