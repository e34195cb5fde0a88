"""Renders every overlay once per session (skipped where kubectl is missing); exact flag parsing."""

from __future__ import annotations

import argparse

import pytest

from tests.k8s.manifests import OVERLAYS, Doc, kubectl, render


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, list[Doc]]:
    if kubectl() is None:
        pytest.skip("kubectl is not on PATH: the overlays are rendered with `kubectl kustomize` (install kubectl)")
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(autouse=True)
def exact_flags(monkeypatch):
    """Parsers built during a test accept only whole flag names.

    argparse takes any unambiguous prefix by default: after a rename of `--no-progress` to
    `--no-progress-bar`, the manifest's old flag would still parse and hide the rename.
    """
    init = argparse.ArgumentParser.__init__

    def init_without_abbreviations(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.allow_abbrev = False

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", init_without_abbreviations)
