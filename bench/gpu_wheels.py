"""Fetch the wheels `make gpu-check` needs on a GPU machine that has no network and lacks them.

That machine has torch (with CUDA), triton, numpy, numba, pyyaml and the rest of `MACHINE_HAS`, but
not pydantic (the configs), DeepSpeed (the engine), trimesh (synthetic shards) or DracoPy (imported
by the mesh decoders). This downloads
`WHEELS` for its Python (cp312, manylinux x86_64), one version each, pinned to the versions installed
in this environment, without dependencies; DeepSpeed publishes only an sdist, so its wheel is built
here without compiled ops (pure Python: the check uses none of its ops). Then it checks what
`--no-deps` cannot: every Requires-Dist of every wheel is on the machine or among the wheels (at a
version the requirement allows), DeepSpeed's wheel holds no compiled code, and the folder stays
under 64 MiB.

    python -m bench.gpu_wheels --dest .whl                          # make gpu-wheels
    python -m bench.gpu_wheels --dest /tmp/whl311 --python-version 3.11   # the same set for a 3.11 test
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "hjson",
          "trimesh", "DracoPy", "deepspeed")
BUILT_HERE = ("deepspeed",)  # sdist only: built without compiled ops
MACHINE_HAS = ("torch", "triton", "numpy", "scipy", "h5py", "fsspec", "safetensors", "pytest", "numba", "pyyaml",
               "psutil", "py-cpuinfo", "msgpack", "ninja", "einops", "packaging", "tqdm", "matplotlib")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MAX_BYTES = 64 * 2**20


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env)


def download(dest: Path, python_version: str) -> None:
    pinned = [f"{name}=={version(name)}" for name in WHEELS if name not in BUILT_HERE]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
        "--implementation", "cp", *platforms, "-d", str(dest), *pinned)
    with tempfile.TemporaryDirectory() as sdists:
        for name in BUILT_HERE:
            pip("download", "--quiet", "--no-deps", "--no-binary=:all:", "-d", sdists, f"{name}=={version(name)}")
        env = {**os.environ, "DS_BUILD_OPS": "0"}  # DeepSpeed: no ops compiled into the wheel
        for sdist in sorted(Path(sdists).iterdir()):
            pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dest), str(sdist), env=env)


def metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def check(dest: Path, python_version: str) -> list[str]:
    """Problems with the folder: unmet requirements, compiled code where there should be none, size."""
    wheels = sorted(dest.glob("*.whl"))
    have = {canonicalize_name(parse_wheel_filename(w.name)[0]): str(parse_wheel_filename(w.name)[1]) for w in wheels}
    problems = [f"missing wheel: {name}" for name in WHEELS if canonicalize_name(name) not in have]
    machine = {canonicalize_name(name) for name in MACHINE_HAS}
    environment = {**default_environment(), "python_version": python_version,
                   "python_full_version": f"{python_version}.0", "sys_platform": "linux", "platform_system": "Linux",
                   "platform_machine": "x86_64"}
    for wheel in wheels:
        for line in metadata(wheel):
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate({**environment, "extra": ""}):
                continue  # an extra, or not for this Python / platform
            name = canonicalize_name(req.name)
            if name in have and not req.specifier.contains(have[name], prereleases=True):
                problems.append(f"{wheel.name} needs {req}, the folder has {have[name]}")
            elif name not in have and name not in machine:
                problems.append(f"{wheel.name} needs {req}, which neither the machine nor the folder has")
    for name in BUILT_HERE:
        for wheel in (w for w in wheels if canonicalize_name(parse_wheel_filename(w.name)[0]) == name):
            with zipfile.ZipFile(wheel) as z:
                compiled = [n for n in z.namelist() if n.endswith((".so", ".pyd"))]
            if compiled or not wheel.name.endswith("-none-any.whl"):
                problems.append(f"{wheel.name} is not pure Python: {compiled[:3]}")
    total = sum(w.stat().st_size for w in wheels)
    if total > MAX_BYTES:
        problems.append(f"{total / 2**20:.1f} MiB of wheels, more than {MAX_BYTES / 2**20:.0f} MiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".whl"))
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()  # one version of each
    download(args.dest, args.python_version)
    for wheel in sorted(args.dest.glob("*.whl")):
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    total = sum(w.stat().st_size for w in args.dest.glob("*.whl"))
    print(f"{total / 2**20:7.2f} MiB  in {args.dest}")
    problems = check(args.dest, args.python_version)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
