# Plain entry points. `make test` is all a fresh machine needs: it builds .venv and runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: test venv demo bench clean

test: venv
	$(BIN)/python -m pytest

venv: $(VENV)/.installed

# torch goes in first, pinned, so nothing resolves it to a multi-GB CUDA build; everything else is
# installed under the same pin (constraints.txt).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $@

# The whole pipeline on a laptop CPU: synthetic corpus -> shards (local Ray) -> pretraining (DeepSpeed
# engine) -> linear-SVM evaluation vs random init -> pictures, all in a local MLflow (demo-output/).
demo: venv
	$(BIN)/python -m launch.demo --out demo-output

bench: venv
	$(BIN)/python bench/model_step.py --config configs/model/tiny.yaml --device cpu

clean:
	rm -rf $(VENV) .pytest_cache
