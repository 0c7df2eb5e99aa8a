# netbench: `make bench` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := benchmarks_out
# `make bench URL=http://host:8000` measures a real endpoint instead of the built-in server.
URL ?=
PYTEST_ARGS ?=

.PHONY: install test test-unit bench bench-slm perf truth mutation clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Installs what the tests need (nginx; llama.cpp's llama-server with SmolLM2, built once per
# machine into ~/.cache/netbench/: ~5 min on 2 cores, ms after; wrk), then runs every test.
# pytest's exit code 5 (no tests collected) fails the target like any other non-zero code.
# -rsR: the summary names each test a timing bound had measured again (tests/host_noise.py), and why.
test: $(STAMP)
	bash scripts/ensure_nginx.sh
	bash scripts/ensure_slm.sh >/dev/null
	bash scripts/ensure_wrk.sh
	$(BIN)/python -m pytest -p no:cacheprovider -rsR $(PYTEST_ARGS)

# The unit tests alone, in well under a minute, with nothing to install: no server, no
# subprocess (tests/conftest.py fails a test outside `integration` that starts one).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

bench: $(STAMP)
	NETBENCH=$(BIN)/netbench OUT=$(OUT) bash scripts/bench.sh $(URL)

bench-slm: $(STAMP)
	NETBENCH=$(BIN)/netbench OUT=$(OUT) bash scripts/bench_slm.sh

# netbench against wrk, a bare pycurl loop, aiohttp and httpx in one run (installs nginx and wrk
# when missing); writes benchmarks_out/perf.md and perf.json. Not part of `make test`.
perf: $(STAMP)
	$(BIN)/python -m benchmarks.run_perf --out $(OUT)

# netbench beside the truth server's log, one row per stream shape (TTFT, tokens, events, ITL;
# the class of each failing shape): benchmarks_out/truth.md and truth.json. About a minute.
truth: $(STAMP)
	$(BIN)/python -m benchmarks.truth_table --out $(OUT)
# Mutation testing of the measuring core (phases, sse, the TCP_INFO parse, curl.py's record
# building) against its fast unit tests; writes benchmarks_out/mutation.md, fails on a surviving
# mutant not listed as equivalent (benchmarks/mutation_equivalents.toml). Not part of `make test`.
$(VENV)/.mutation-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	touch $@

mutation: $(VENV)/.mutation-installed
	$(BIN)/python -m benchmarks.mutation --out $(OUT)

clean:
	rm -rf $(VENV) build *.egg-info mutants
