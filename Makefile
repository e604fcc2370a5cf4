# Two commands do all set-up on a fresh machine (Python 3.11 + pip):
#   make book   builds the whole book (HTML in _build/html) on the offline quick profile
#   make test   runs every test: pytest over tests/ and nbval over the book's notebooks
# Both create .venv and install what they need; torch is the CPU build on purpose.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.metanb-installed
EXTRAS ?= dev,book,hub,offline,assign

# no code path of the quick profile may touch the Hugging Face Hub
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: book test install lint notebooks assignments results clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --keep-going
	@echo "book: open _build/html/index.html"

test: $(STAMP)
	$(BIN)/ruff check metanb tests benchmarks tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests book \
	  --nbval --nbval-current-env --nbval-cell-timeout=900 \
	  --nbval-sanitize-with book/nbval_sanitize.cfg

lint: $(STAMP)
	$(BIN)/ruff check metanb tests benchmarks tools

# Re-execute every chapter in place (stores the outputs nbval compares against).
notebooks: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py book

assignments: $(STAMP)
	$(BIN)/python -m metanb assignments build

# Regenerate the committed results chapter 6 reads (long; see tools/book_results.sh).
# RESULTS="quick sweep minilm" picks the runs (default: quick sweep).
results: $(STAMP)
	PYTHON=$(BIN)/python bash tools/book_results.sh $(RESULTS)

clean:
	rm -rf _build
