# The two commands of the README: `make demo` (the main job) and `make test`. Each sets itself up.
VENV ?= .venv

.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh $(VENV)

demo: setup
	$(VENV)/bin/alcgap run configs/sio2-quick.yaml --run-dir runs/sio2-quick

test: setup
	$(VENV)/bin/python -m pytest

bench: setup
	$(VENV)/bin/python benchmarks/composite_cost.py
