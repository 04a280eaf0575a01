"""Installs are reproducible: a nightly build pulled in by a dependency is pinned by offrl itself."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def direct_requirements() -> dict[str, Requirement]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {canonicalize_name(req.name): req for req in map(Requirement, dependencies)}


def unpinned_dev_builds() -> dict[str, str]:
    """Installed dev/nightly builds that some package in offrl's dependency closure requires
    without an exact version: {name: the requirement that lets any build in}."""
    found, seen, queue = {}, set(), list(direct_requirements())
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            child = canonicalize_name(req.name)
            queue.append(child)
            try:
                installed = Version(metadata.version(child))
            except metadata.PackageNotFoundError:
                continue
            exact = any(spec.operator in ("==", "===") for spec in req.specifier)
            if installed.is_devrelease and not exact:
                found[child] = f"{name} requires {text!r}"
    return found


def test_nightly_dependencies_are_pinned_to_the_installed_build():
    pins = direct_requirements()
    for name, why in unpinned_dev_builds().items():
        assert name in pins, f"{why}: pin {name}=={metadata.version(name)} in pyproject.toml (docs/dependencies.md)"
        assert [spec.operator for spec in pins[name].specifier] == ["=="], f"{name} must be pinned exactly"
        assert pins[name].specifier.contains(metadata.version(name), prereleases=True), (
            f"installed {name} {metadata.version(name)} is not the pinned build {pins[name].specifier}"
        )


def test_tfp_nightly_is_found_as_a_dev_build():
    """The check above is not vacuous while distrax needs tfp-nightly."""
    distrax_needs = {canonicalize_name(Requirement(text).name) for text in metadata.requires("distrax") or []}
    if "tfp-nightly" in distrax_needs:
        assert "tfp-nightly" in unpinned_dev_builds()
