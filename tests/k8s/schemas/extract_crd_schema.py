"""Write the openAPIV3Schema of one served CRD version as compact JSON, descriptions dropped.

The CRD files of KubeRay and JobSet are over 1 MB each, mostly descriptions; the schema tests only
need the structure. Used to produce the files beside this script:

    python tests/k8s/schemas/extract_crd_schema.py ray.io_rayjobs.yaml v1 > tests/k8s/schemas/rayjob-ray.io-v1.json
    python tests/k8s/schemas/extract_crd_schema.py jobset.x-k8s.io_jobsets.yaml v1alpha2 \
        > tests/k8s/schemas/jobset-jobset.x-k8s.io-v1alpha2.json

(KubeRay v1.7.0 `ray-operator/config/crd/bases/ray.io_rayjobs.yaml`; JobSet v0.12.0
`config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml`; both projects are Apache-2.0.) To move
to newer operator versions, extract again from their CRDs and run tests/k8s.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def main(crd_path: str, version: str) -> None:
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        raise SystemExit(f"{crd_path}: version {version!r} is not served (served: {sorted(served)})")
    out = {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version,
        "openAPIV3Schema": without_descriptions(served[version]["schema"]["openAPIV3Schema"]),
    }
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
