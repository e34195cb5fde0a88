"""What the machine offers the check: Python, torch and CUDA, the GPU, CPU cores, and each package the
check imports with its version (or why it cannot be imported).

    python -m bench.gpucheck.environment --json env.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

# What the check's parts import (model, loader, sharding, DeepSpeed engine, tests); triton compiles on CUDA.
MODULES = ("torch", "triton", "numpy", "numba", "yaml", "pydantic", "safetensors", "fsspec", "h5py", "tqdm",
           "trimesh", "deepspeed", "pytest")


def module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # a broken install raises more than ImportError
        return f"missing: {type(err).__name__}: {err}"
    return str(getattr(module, "__version__", "unknown version"))


def probe() -> dict:
    import torch

    info = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "modules": {name: module_version(name) for name in MODULES},
    }
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_count=torch.cuda.device_count(),
                    device_capability=f"{props.major}.{props.minor}",
                    device_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    info = probe()
    args.json.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
