"""Renders every overlay once per session; skips the manifest tests where kubectl is missing."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import OVERLAYS, Doc, kubectl, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    if kubectl() is None:
        pytest.skip("kubectl is not on PATH: the overlays are rendered with `kubectl kustomize` (install kubectl)")
    return {overlay: render(overlay) for overlay in OVERLAYS}
