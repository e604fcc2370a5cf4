# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make book   builds the whole book (HTML in _build/html) on the offline quick profile
#   make test   runs every test: pytest over tests/ and nbval over the book's notebooks
# Both create .venv and install what they need; torch is the CPU build on purpose.
# On a laptop or CI add TORCH_INDEX=https://download.pytorch.org/whl/cpu (the CPU wheel
# index) so pip does not download CUDA libraries; empty, pip uses its configured index.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.metanb-installed
EXTRAS ?= dev,book,hub,offline,assign
TORCH_INDEX ?=
TORCH_FROM  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
BOOK_CACHE  := _build/.jupyter_cache
# schema checks of the publishing files, offline (schemas ship with check-jsonschema)
CHECK_WORKFLOWS := $(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
CHECK_CITATION  := $(BIN)/check-jsonschema --builtin-schema vendor.citation-file-format CITATION.cff

# no code path of the quick profile may touch the Hugging Face Hub
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: book test install lint notebooks assignments results dist clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_FROM)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Chapters execute through jupyter-cache; the cache is dropped when the package changes.
book: $(STAMP)
	$(BIN)/python tools/book_cache.py sync $(BOOK_CACHE)
	$(BIN)/jupyter-book build . --keep-going
	@echo "book: open _build/html/index.html"

test: $(STAMP)
	$(BIN)/ruff check metanb tests benchmarks tools
	$(CHECK_WORKFLOWS)
	$(CHECK_CITATION)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests book \
	  --nbval --nbval-current-env --nbval-cell-timeout=900 \
	  --nbval-sanitize-with book/nbval_sanitize.cfg

lint: $(STAMP)
	$(BIN)/ruff check metanb tests benchmarks tools
	$(CHECK_WORKFLOWS)
	$(CHECK_CITATION)

# Re-execute every chapter in place (stores the outputs nbval compares against).
notebooks: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py book

assignments: $(STAMP)
	$(BIN)/python -m metanb assignments build

# Regenerate the committed results chapter 6 reads (long; see tools/book_results.sh).
# RESULTS="quick sweep minilm" picks the runs (default: quick sweep).
results: $(STAMP)
	PYTHON=$(BIN)/python bash tools/book_results.sh $(RESULTS)

# The sdist and wheel a release uploads, checked as PyPI would (twine check --strict).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf _build
