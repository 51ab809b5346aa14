# Two commands do everything on a fresh machine:
#   make demo   set up .venv, build the demo models (cached), run the gate on examples/
#   make test   set up .venv and run the whole suite
# Both are idempotent: the set-up step is skipped when .venv is up to date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup browser clean lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so pip takes the local wheels and keeps the CUDA/CPU build in place
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The HTML report's browser test needs Debian's chromium; install it when missing and we are root (as on CI).
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the report's browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"; \
	fi

demo: setup
	$(PY) examples/run_demo.py

test: setup browser
	$(PY) -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check pytest_memorization tests bench fixtures examples

clean:
	rm -rf $(VENV) .memorization_cache fixtures/models examples/report
