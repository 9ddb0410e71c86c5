# The two commands of the README: `make demo` (the main job) and `make test`. Each sets itself up.
VENV ?= .venv

.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh $(VENV)

demo: setup
	$(VENV)/bin/alcgap fit configs/sio2-fit-quick.yaml --run-dir runs/sio2-fit-quick

test: setup
	$(VENV)/bin/python -m pytest

bench: setup
	$(VENV)/bin/python benchmarks/composite_cost.py
