"""Registered router versions: resolve a reference, download a version's bundle, move aliases.

Every training run logs its bundle under the run's `bundle/` artifacts and registers the
ONNX flavor model as a new version; the version's `run_id` links the two. Services load
the *bundle* (ladder, policy, featurizer assets, manifest) with `Router.load`, so `pull`
fetches that directory and checks every file against the manifest before handing it over.
The runtime never imports mlflow.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.bundle import MANIFEST, BundleError, Manifest
from router.ladder import Ladder

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# The registered model a training run adds a version to unless told otherwise.
DEFAULT_REGISTERED_MODEL = "tier-router"
CHAMPION = "champion"
BUNDLE_ARTIFACT = "bundle"
# Version tag: the ladder signature (tiers, result keys, prices) the version routes over.
LADDER_TAG = "ladder"
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


# -- one registered model per ladder ---------------------------------------------------------
# Versions are only comparable over the same tiers, result keys and prices (check_comparable
# in training/compare.py), so a registered model holds one ladder's versions.


def ladder_signature(
    names: list[str], keys: list[str], prices_in: list[float], prices_out: list[float]
) -> str:
    """What makes two versions comparable, as one readable line:
    `haiku=KEY ($0.25/$1.25 per Mtok), sonnet=...`."""
    return ", ".join(
        f"{n}={k} (${float(pi):g}/${float(po):g} per Mtok)"
        for n, k, pi, po in zip(names, keys, prices_in, prices_out, strict=True)
    )


def signature_of(ladder: Ladder) -> str:
    return ladder_signature(
        ladder.names,
        [t.outcomes_key for t in ladder.tiers],
        [t.price_in_per_mtok for t in ladder.tiers],
        [t.price_out_per_mtok for t in ladder.tiers],
    )


def version_ladder(c: MlflowClient, mv: ModelVersion) -> str | None:
    """The ladder signature a version was trained over: its `ladder` tag, else its run's
    params (versions registered before the tag existed); None when neither says."""
    tagged = (mv.tags or {}).get(LADDER_TAG)
    if tagged:
        return str(tagged)
    if not mv.run_id:
        return None
    try:
        params = c.get_run(mv.run_id).data.params
        fields = [
            params[k].split(",")
            for k in ("ladder", "ladder.outcomes_keys", "ladder.prices_in", "ladder.prices_out")
        ]
        return ladder_signature(
            fields[0], fields[1], [float(x) for x in fields[2]], [float(x) for x in fields[3]]
        )
    except (KeyError, ValueError):
        return None
    except Exception:  # the run was deleted or the store is unreachable: unknown
        return None


def _latest(c: MlflowClient, name: str) -> ModelVersion | None:
    versions = c.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def derived_model_name(base: str, ladder: Ladder, ladder_path: Path | str) -> str:
    """`<base>-<ladder file stem>-<8 hex of the signature>`: one name per ladder."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(ladder_path).stem).strip("-._") or "ladder"
    digest = hashlib.sha256(signature_of(ladder).encode()).hexdigest()[:8]
    return f"{base}-{stem}-{digest}"


def registered_model_for(
    c: MlflowClient, ladder: Ladder, ladder_path: Path | str, requested: str | None
) -> tuple[str, str | None]:
    """The registered model this ladder's version goes to, and a note when it is not the
    default.

    `requested` None: the default model, unless its versions route over another ladder,
    then one derived from this ladder (reused by every later training on it). A name given
    explicitly whose versions route over another ladder is refused (RegistryError) before
    any training, naming both ladders.
    """
    sig = signature_of(ladder)
    name = requested or DEFAULT_REGISTERED_MODEL
    latest = _latest(c, name)
    theirs = None if latest is None else version_ladder(c, latest)
    if latest is None or theirs is None or theirs == sig:
        return name, None
    if requested is not None:
        raise RegistryError(
            f"--registered-model {name}: its versions route over another ladder (version "
            f"{latest.version}: {theirs}); this training's ladder {ladder_path} is {sig}. "
            "Versions over different ladders cannot be compared or promoted over each other: "
            f"register into another model, e.g. --registered-model "
            f"{derived_model_name(name, ladder, ladder_path)}"
        )
    derived = derived_model_name(name, ladder, ladder_path)
    return derived, (
        f"registered model {name} holds versions over another ladder ({theirs}); this "
        f"ladder's versions go to {derived}"
    )


class LadderMismatch(ValueError):
    """Two registered versions route over different ladders: no comparison is meaningful."""


def check_same_ladder(c: MlflowClient, versions: list[ModelVersion]) -> None:
    """Refuse, before downloading or scoring anything, versions over different ladders
    (tiers, result keys, prices), naming both versions and both ladders. A version whose
    ladder is not recorded is left to `check_comparable` after scoring."""
    first: tuple[ModelVersion, str] | None = None
    for mv in versions:
        sig = version_ladder(c, mv)
        if sig is None:
            continue
        if first is None:
            first = (mv, sig)
        elif sig != first[1]:
            a, b = first[0], mv
            raise LadderMismatch(
                f"{a.name} version {a.version} and version {b.version} route over different "
                f"ladders: v{a.version} over {first[1]}; v{b.version} over {sig}. Versions over "
                "different ladders are not comparable (keep one registered model per ladder: "
                "train --registered-model, or leave it unset to get one per ladder)"
            )
