"""The Dockerfile, read with BuildKit's own parser (the `dockerfile` package), and its build context.

The image cannot be built on these machines (no daemon, no registry), so the tests check what a
build depends on: the base, the pins shared with the rest of the project, the user, and that every
file a manifest runs from the image is in the build context after .dockerignore.
"""

from __future__ import annotations

import re
from pathlib import Path

import dockerfile
import tomllib
from docker.utils.build import exclude_paths

from tests.k8s.manifests import ROOT

COMMANDS = dockerfile.parse_file(str(ROOT / "Dockerfile"))


def instructions(cmd: str) -> list[dockerfile.Command]:
    return [c for c in COMMANDS if c.cmd.upper() == cmd]


def build_args() -> dict[str, str]:
    """ARG defaults, global (before FROM) and per stage alike."""
    args = {}
    for c in instructions("ARG"):
        for value in c.value:
            name, _, default = value.partition("=")
            args[name] = default
    return args


def resolve(text: str) -> str:
    args = build_args()
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args[m.group(1)], text)


def context_files() -> set[str]:
    """Paths Docker sends as the build context: everything .dockerignore does not exclude."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return set(exclude_paths(str(ROOT), patterns))


def test_single_stage_on_a_cuda_base():
    [base] = instructions("FROM")
    image = base.value[0]
    assert image.startswith("nvidia/cuda:") and "-ubuntu" in image, image


def test_torch_pin_matches_constraints():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert build_args()["TORCH_VERSION"] == pins["torch"]
    assert any('"torch==${TORCH_VERSION}"' in " ".join(c.value) for c in instructions("RUN"))


def test_ray_pin_matches_the_rayjob(rendered_overlays):
    from tests.k8s.manifests import find

    for docs in rendered_overlays.values():
        assert find(docs, "RayJob")["spec"]["rayClusterSpec"]["rayVersion"] == build_args()["RAY_VERSION"]


def test_final_user_is_a_non_root_uid_the_pods_run_as(rendered_overlays):
    from tests.k8s.manifests import containers, pod_templates

    user = resolve(instructions("USER")[-1].value[0])
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, user
    for docs in rendered_overlays.values():
        for d in docs:
            for _, template in pod_templates(d):
                if any(c["image"].split(":")[0].endswith("asymdsd-scale") for c in containers(template)):
                    assert template["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_the_project_install_has_every_package_it_declares():
    """pyproject's packages, and what the manifests run, are copied into the image."""
    copied = {source for c in instructions("COPY") for source in c.value[:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied
    assert {"configs", "pyproject.toml", "README.md", "constraints.txt"} <= copied
    [workdir] = instructions("WORKDIR")
    assert workdir.value[0] == "/app"  # the manifests run launch/pretrain.py and read configs/ relative to /app


def test_everything_copied_is_in_the_build_context():
    files = context_files()
    for c in instructions("COPY"):
        for source in c.value[:-1]:
            if (ROOT / source).is_file():
                assert source in files, f"COPY {source}: excluded by .dockerignore"
            else:
                assert [p for p in files if p.startswith(source + "/")], f"COPY {source}: not in the build context"
    for needed in ("launch/pretrain.py", "sharding/shard_corpus.py", "configs/data/mixture.yaml",
                   "configs/pretrain/asymdsd_b_mixture.yaml", "configs/deepspeed/zero2.json",
                   "configs/model/asymdsd_b.yaml"):
        assert needed in files, needed


def test_context_leaves_out_environments_data_and_history():
    files = context_files()
    for excluded in (".venv/", ".git/", "data/", "runs/", "tests/"):
        assert not [p for p in files if p.startswith(excluded)], excluded
    assert not [p for p in files if "__pycache__" in Path(p).parts]
