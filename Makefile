# Plain entry points. `make test` is all a fresh machine needs: it builds .venv and runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: test venv demo bench compare-methods gpu-wheels gpu-check clean

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
	$(BIN)/python -m bench.model_step --config configs/model/tiny.yaml --device cpu

# AsymDSD-tiny and Distillation with Contrast on the tiny ViT, PointNet and DGCNN, with and without the
# contrastive term, 3 seeds each at the same budget on the demo corpus: SVM against random init, CPU
# shapes/s (hours on a laptop; a rerun continues where the last one stopped).
compare-methods: venv
	$(BIN)/python -m bench.compare_methods --out compare-output

# The wheels `make gpu-check` needs on a GPU machine with torch but no network and no pydantic,
# DeepSpeed or trimesh, into .whl/ (carry that folder along): bench.gpu_wheels names and checks them.
gpu-wheels: venv
	$(BIN)/python -m bench.gpu_wheels --dest .whl

# One command on the GPU machine, without a venv: the wheels of .whl/ (when there) go into a private
# folder on PYTHONPATH, then `-m bench.gpu_check` runs from the project root with the machine's python3
# (7.5 min budget) and writes gpu_check.json and gpu_check.md to $OUT (default gpu-check-output/).
# GPU_CHECK_ARGS=--smoke runs the CPU smoke check instead.
GPU_WHEELS ?= .whl
GPU_SITE ?= /tmp/asymdsd-gpu-site
gpu-check:
	if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then $(PYTHON) -m pip install -q --no-index --no-deps \
	    --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl; fi
	PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m bench.gpu_check \
	    --out $${OUT:-gpu-check-output} $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
