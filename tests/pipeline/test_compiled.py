"""The loader's compiled kernels work where Numba can write no cache (read-only image, no home)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import MultiCropConfig
from pipeline.crops import multi_crop
from pipeline.patchify import patch_indices

ROOT = Path(__file__).resolve().parents[2]

NO_CACHE = """
import json, warnings
import numba.core.caching
import numpy as np
numba.core.caching.CacheImpl._locator_classes = []  # as if no directory were writable
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from pipeline.config import MultiCropConfig
    from pipeline.crops import multi_crop
    from pipeline.patchify import patch_indices
rng = np.random.default_rng(7)
g, loc = multi_crop(rng.standard_normal((3000, 3)).astype(np.float32), MultiCropConfig(), rng)
centers, groups = patch_indices(g, 64, 32, rng)
print(json.dumps({"warnings": [str(w.message) for w in caught], "points": g.points.tolist(),
                  "centers": centers.tolist(), "groups": groups.tolist()}))
"""


@pytest.mark.slow
def test_kernels_compile_without_a_writable_cache():
    out = subprocess.run([sys.executable, "-c", NO_CACHE], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert any("compiling _patch_indices in every process" in w for w in result["warnings"])
    assert any("compiling _box_distance in every process" in w for w in result["warnings"])
    rng = np.random.default_rng(7)  # the same sample with the cached kernels of this process
    g, _ = multi_crop(rng.standard_normal((3000, 3)).astype(np.float32), MultiCropConfig(), rng)
    centers, groups = patch_indices(g, 64, 32, rng)
    assert np.array_equal(np.array(result["points"], np.float32), g.points)
    assert np.array_equal(result["centers"], centers) and np.array_equal(result["groups"], groups)
