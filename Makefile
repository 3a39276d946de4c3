# curate-loop: a newcomer needs `make demo` and `make test`; both set up what is missing first.
# Setup is idempotent: each step leaves a stamp and reruns only when its inputs change.

PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-labelstudio
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CLI := $(VENV)/bin/curate-loop
STAMPS := .stamps

.PHONY: setup demo test bench doctor browser clean

setup: $(STAMPS)/venv $(STAMPS)/mongod $(STAMPS)/labelstudio $(STAMPS)/plugin

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet uv
	@echo "==> installing curate-loop and its pinned dependencies into $(VENV)"
	@$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	@touch $@

$(STAMPS)/mongod: $(STAMPS)/venv
	@echo "==> checking FiftyOne's MongoDB"
	@$(PY) -m curate_loop.mongodb
	@touch $@

$(STAMPS)/labelstudio: $(STAMPS)/venv
	@echo "==> installing the Label Studio server into its own virtualenv ($(LS_VENV))"
	@$(CLI) labelstudio install --venv $(LS_VENV)
	@touch $@

$(STAMPS)/plugin: $(STAMPS)/venv
	@echo "==> making the curate-loop plugin visible to FiftyOne"
	@$(CLI) plugin install
	@touch $@

# Debian's Chromium drives the FiftyOne App in the browser tests (Playwright cannot download a browser here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "==> installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver >/dev/null; fi; }

doctor: setup
	@$(CLI) doctor $(DOCTOR_ARGS)

# The simulated annotator answers the first batch so the loop closes headless; the next batch is left for you.
DEMO_ARGS ?= --simulate-annotator

demo: setup
	@$(PY) -m curate_loop.demo $(DEMO_ARGS)

test: setup browser
	@$(PY) -m pytest

bench: setup
	@$(PY) -m bench

clean:
	rm -rf $(STAMPS) .pytest_cache
