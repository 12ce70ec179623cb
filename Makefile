# edgeship: the README's two commands. Each bootstraps .venv and the data it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
RUN    ?= runs/demo
MODEL  ?= mlp
# System packages: the dataset (Debian/Ubuntu, only when Fashion-MNIST is on disk nowhere),
# and for the tests a real sshd and a venv-capable system Python (the "Pi" on loopback), and
# the Debian archive keyring for the emulated Raspberry Pi userlands (tests/support/pi.py
# fetches Debian's arm64/armhf packages and Debian 13's qemu-user 10 into the cache itself),
# chromium (the serve page in a real browser, driven by Playwright) and systemd
# (`systemd-analyze verify` of the service unit; nothing of systemd runs), openssl (the web
# app's throwaway TLS pair), ffmpeg (the camera's MJPEG clips), nodejs (the web app's resize.js
# run against Pillow) and postgresql (`edgeship tune`'s two-worker test starts its own server
# in a temp folder as `nobody`).
DATA_PKG  := dataset-fashion-mnist
TEST_PKGS := openssh-server python3-venv debian-archive-keyring chromium systemd openssl ffmpeg nodejs \
             postgresql
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test install data system-test-deps lint clean metadata-schema mutants

demo: install data
	$(VENV)/bin/edgeship pipeline --model $(MODEL) --out $(RUN)

test: install data system-test-deps
	$(PY) -m pytest -q

install: $(STAMP)

# torch's CPU build first, pinned: `torch==2.13.0` takes it (these machines hold it locally),
# while a looser spec pulls a CUDA build of several GB; then the extras, `torch` included
# (litert-torch). Elsewhere: docs/pytorch.md (PyTorch's CPU wheel index).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[desktop,edge,fleet,torch,tune,dev]'
	touch $(STAMP)

# Fashion-MNIST: found on disk, else the Debian package when we can install it as root,
# else Keras's own download (online machines) the first time the data is loaded.
data: install
	@if $(PY) -c "from edgeship.train.datasets import find_fashion_mnist as f; f(download=None)" 2>/dev/null; then \
		echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory apt-install PKGS="$(DATA_PKG)"; \
	else \
		echo "Fashion-MNIST not on disk: Keras will download it"; \
	fi

# Installs what is missing of $(TEST_PKGS) as root with apt-get. Elsewhere (no root, no
# dpkg) it says what is missing and goes on: the tests that need it skip, and say why
# (CI sets EDGESHIP_REQUIRE_ALL=1, which turns every skip into a failure).
system-test-deps:
	@if ! command -v dpkg >/dev/null; then echo "No dpkg: the sshd/qemu tests may skip"; exit 0; fi; \
	missing=""; for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		$(MAKE) --no-print-directory apt-install PKGS="$$missing"; \
	else \
		echo "Missing:$$missing (sudo apt-get install$$missing); the tests that need them skip"; \
	fi

apt-install:
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "Please install:$(PKGS) (sudo apt-get install$(PKGS))"; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS) >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS); }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict edge_runtime
	$(VENV)/bin/mypy edgeship

# Mutation testing (not in CI): mutmut changes the logic-dense modules ([tool.mutmut] in
# pyproject.toml) one small edit at a time and runs the fast tests that guard them; then the
# score per module and every survivor (`.venv/bin/mutmut show NAME` prints one). From scratch
# each time (mutants/ is mutmut's working copy). MUTANTS='edge_runtime.image.stages.*' runs one module.
MUTANTS ?=
mutants: install
	rm -rf mutants
	nice -n 10 $(VENV)/bin/mutmut run --max-children $$(nproc) $(MUTANTS) || true
	$(PY) tools/mutants_report.py --survivors

# Regenerate the checked-in reader/writer of the standard TFLite Model Metadata from its
# schema (Debian's flatbuffers-compiler; not needed to build, test or run edgeship).
metadata-schema:
	command -v flatc >/dev/null || $(MAKE) --no-print-directory apt-install PKGS=flatbuffers-compiler
	$(PY) tools/metadata_schema.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
