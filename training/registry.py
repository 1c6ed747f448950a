"""Registered router versions: resolve a reference, download a version's bundle, move aliases.

Every training run logs its bundle under the run's `bundle/` artifacts and registers the
ONNX flavor model as a new version; the version's `run_id` links the two. Services load
the *bundle* (ladder, policy, featurizer assets, manifest) with `Router.load`, so `pull`
fetches that directory and checks every file against the manifest before handing it over.
The runtime never imports mlflow.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.bundle import MANIFEST, BundleError, Manifest

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# The registered model a training run adds a version to unless told otherwise.
DEFAULT_REGISTERED_MODEL = "tier-router"
CHAMPION = "champion"
BUNDLE_ARTIFACT = "bundle"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(ValueError):
    """A registry reference cannot be resolved or a version has no usable bundle."""


@dataclass(frozen=True)
class ModelRef:
    """`NAME@alias`, `NAME/VERSION` or a bare `NAME` (its latest version)."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        text = text.strip()
        if text.startswith("models:/"):
            text = text[len("models:/"):]
        if "@" in text:
            name, alias = text.split("@", 1)
            ref = cls(name, alias=alias)
        elif "/" in text:
            name, version = text.rsplit("/", 1)
            if not version.isdigit() or int(version) < 1:
                raise RegistryError(f"version must be a positive integer in {text!r}")
            ref = cls(name, version=str(int(version)))
        else:
            ref = cls(text)
        if not _NAME.match(ref.name) or (ref.alias is not None and not _NAME.match(ref.alias)):
            raise RegistryError(
                f"expected NAME, NAME@ALIAS or NAME/VERSION (e.g. tier-router@champion), "
                f"got {text!r}"
            )
        return ref

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version}" if self.version else self.name


@dataclass(frozen=True)
class PulledBundle:
    path: Path
    name: str
    version: str
    run_id: str
    router_version: str


def client() -> MlflowClient:
    """A client on MLFLOW_TRACKING_URI (MLflow's default local store when unset)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    return MlflowClient()


def resolve(c: MlflowClient, ref: ModelRef) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias:
            return c.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            return c.get_model_version(ref.name, ref.version)
        versions = c.search_model_versions(f"name = '{ref.name}'")
    except MlflowException as e:
        raise RegistryError(f"{ref}: not found in the model registry ({e.message})") from None
    if not versions:
        raise RegistryError(f"{ref}: registered model has no versions")
    return max(versions, key=lambda v: int(v.version))


def champion(c: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the `champion` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def list_versions(c: MlflowClient, name: str) -> list[ModelVersion]:
    versions = c.search_model_versions(f"name = '{name}'")
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions (train one first)")
    return sorted(versions, key=lambda v: int(v.version))


def download_bundle(mv: ModelVersion, dest: Path) -> PulledBundle:
    """The version's bundle at `dest`, verified against its manifest (sha256 of every file).

    Downloads into a temporary sibling first and renames, so a failed or tampered
    download never replaces a good bundle that a service may be reading.
    """
    import mlflow

    if not mv.run_id:
        raise RegistryError(f"{mv.name}/{mv.version}: version has no source run; no bundle")
    if dest.exists() and not dest.is_dir():
        raise RegistryError(f"--out {dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).exists():
        raise RegistryError(f"--out {dest} exists and is not a bundle; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        got = Path(mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(staging)))
        try:
            manifest = Manifest.read(got)
            manifest.verify(got)
        except BundleError as e:
            raise RegistryError(
                f"{mv.name}/{mv.version}: downloaded bundle rejected: {e}") from None
        extra = sorted(p.name for p in got.iterdir() if p.name not in manifest.files
                       and p.name != MANIFEST)
        if extra:
            raise RegistryError(
                f"{mv.name}/{mv.version}: bundle has files not in its manifest: {extra}")
        tagged = (mv.tags or {}).get("router_version")
        if tagged and tagged != manifest.router_version:
            raise RegistryError(
                f"{mv.name}/{mv.version}: bundle is {manifest.router_version}, but the version "
                f"was registered for {tagged}")
        if dest.exists():
            shutil.rmtree(dest)
        got.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PulledBundle(dest, mv.name, str(mv.version), mv.run_id, manifest.router_version)


def pull(ref: ModelRef, out: Path, c: MlflowClient | None = None) -> PulledBundle:
    return download_bundle(resolve(c or client(), ref), out)


def set_champion(c: MlflowClient, name: str, version: str) -> None:
    c.set_registered_model_alias(name, CHAMPION, version)
