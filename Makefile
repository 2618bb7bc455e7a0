# siamcli — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := runs/demo
# The demo trains offline, from scratch, on 64 px images: a few minutes on 2 CPU cores.
# --val-fraction 0.5 holds out 6 of the 12 identities (s1 s2 s3 s5 s11 s12 with --seed 0),
# enough for evaluate to tell the trained model from its baselines. Evaluate runs before
# index so the index carries the calibrated match threshold; the query is the tenth photo of
# s5, a person the model never trained on, whose other photos are indexed.
DEMO_TRAIN_FLAGS ?= --image-size 64 --weights none --frozen-epochs 5 --finetune-epochs 2 --steps-per-epoch 50 --val-fraction 0.5

.DEFAULT_GOAL := help
.PHONY: help install demo serve test check lint clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install siamcli with its test extras

demo: $(STAMP) ## Train on sample_data, evaluate on held-out people, index, query a held-out photo
	$(BIN)/siamcli train sample_data/gallery --out $(DEMO) --force $(DEMO_TRAIN_FLAGS)
	$(BIN)/siamcli evaluate --model $(DEMO)
	$(BIN)/siamcli index sample_data/gallery --model $(DEMO) --force
	$(BIN)/siamcli query sample_data/queries/s5_10.png --model $(DEMO) --k 5

serve: $(STAMP) ## Serve the demo's index at http://127.0.0.1:8000 (run make demo first)
	$(BIN)/siamcli serve --index $(DEMO)/index

# Two pytest-xdist workers: much of a test's time is single-threaded (TensorFlow's start-up and
# tracing, subprocesses, servers), so two tests at a time use both cores. Whole files go to a worker
# (a module's fixtures are built once), the longest first (order set in tests/conftest.py).
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

# pytest exits 5 when it collects no test: a broken collection, never a pass.
test: $(STAMP) ## Run the test suite (fails if pytest collects no test)
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "error: pytest collected no tests; a broken collection is a failure" >&2; fi; exit $$code

check: $(STAMP) ## Run the fast tests: no training, no ResNet50 run (pytest -m "not slow"), for the edit-test loop
	$(BIN)/python -m pytest -q -m "not slow"; code=$$?; \
	if [ $$code -eq 5 ]; then echo "error: pytest collected no tests; a broken collection is a failure" >&2; fi; exit $$code

lint: $(STAMP) ## Lint the code with ruff (configured in pyproject.toml)
	$(BIN)/ruff check siamcli tests benchmarks

clean: ## Remove the virtualenv, runs and caches
	rm -rf $(VENV) runs .pytest_cache
