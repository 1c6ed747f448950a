"""The bundle: its layout, its writer's steps and its reader's checks, in one place.

A bundle is a flat directory (or a .tar.gz / .zip of one) holding ONNX models, JSON,
TOML and .npy / .npz files only: nothing on load can execute code (arrays load without
pickle). Every file is listed in
manifest.json with its sha256, and load refuses any mismatch. Writers (training's
export, `tier-router policy`) fill a `staged_bundle` and finish with `seal_bundle`;
the reader is `Router.load`, which opens it with `open_bundle` and `Manifest.read`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# 3: the models' weights as arrays beside their graphs (model_weights.npz, verifier_weights.npz).
FORMAT_VERSION = 3

# -- layout: every file a bundle may hold, flat in one directory -------------------------
MANIFEST = "manifest.json"  # names and sha256 of all the others, and the router version
LADDER_FILE = "ladder.toml"  # the tiers, cheapest first, as trained
POLICY_FILE = "policy.json"  # routing thresholds
MODEL_FILE = "model.onnx"  # features -> P(pass) per tier
MODEL_WEIGHTS = "model_weights.npz"  # the same model's arrays (router.softmax_sets)
FEATURIZER_FILE = "featurizer.json"  # which featurizer, and its settings
STATIC_TOKENIZER = "static_tokenizer.json"
STATIC_TABLE = "static_table.npy"  # static embeddings, float32
ENCODER_MODEL = "encoder.onnx"  # accurate featurizer only
ENCODER_TOKENIZER = "encoder_tokenizer.json"  # accurate featurizer only
JOINT_SPACE_FILE = "joint_space.json"  # embedding + hand features -> model input
VERIFIER_MODEL = "verifier.onnx"  # optional, with the next two: the answer cascade
VERIFIER_WEIGHTS = "verifier_weights.npz"  # its weights and bias
VERIFIER_FILE = "verifier.json"
CASCADE_FILE = "cascade.json"
POLICY_DATA = "policy_data.npy"  # what `tier-router policy` refits from; runtime ignores it
CASCADE_DATA = "cascade_data.npy"  # the same for the cascade policy
REPORT_FILE = "train_report.json"  # how the bundle was made; runtime ignores it
# Written into every manifest, so a directory from another project that happens to hold
# a manifest.json is told apart from an old or new tier-router bundle. Manifests written
# before the field have none; they are recognised by format_version / router_version / files.
FORMAT = "tier-router-bundle"
_OUR_KEYS = ("format_version", "router_version", "files")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALLOWED_SUFFIXES = (".onnx", ".json", ".toml", ".npy", ".npz", ".txt", ".png")
_MAX_ARCHIVE_BYTES = 2 * 1024**3


class BundleError(ValueError):
    """A bundle is missing, malformed or fails its integrity (checksum) check."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise BundleError(f"unsafe file name in bundle manifest: {name!r}")
    if not name.endswith(_ALLOWED_SUFFIXES):
        raise BundleError(f"file type not allowed in a bundle: {name!r}")
    return name


def runtime_versions() -> dict[str, str]:
    import numpy
    import onnxruntime

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@dataclass(frozen=True)
class Manifest:
    format_version: int
    router_version: str
    files: dict[str, str]
    info: dict[str, Any]

    @classmethod
    def read(cls, bundle_dir: Path) -> Manifest:
        path = bundle_dir / MANIFEST
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"{bundle_dir}: not a bundle (no {MANIFEST})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise BundleError(f"{path}: unreadable manifest: {e}") from None
        if not isinstance(doc, dict):
            raise BundleError(f"{path}: not a tier-router bundle (manifest is not a JSON object)")
        _check_ours(doc, path)
        fv = doc["format_version"]
        if fv != FORMAT_VERSION:
            newer = fv > FORMAT_VERSION
            raise BundleError(
                f"{path}: tier-router bundle format_version {fv} is not supported (this "
                f"runtime reads {FORMAT_VERSION}); "
                + (
                    "it was written by a newer tier-router: upgrade tier-router"
                    if newer
                    else "it was written by an older tier-router: re-train it (tier-router train), "
                    "or load it with the tier-router version that wrote it"
                )
            )
        files = doc.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(f"{path}: field 'files' must map file name -> sha256")
        for name, digest in files.items():
            try:
                check_name(name)
            except BundleError as e:
                raise BundleError(f"{path}: {e}") from None
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise BundleError(f"{path}: files[{name!r}] is not a sha256 hex digest")
        version = doc.get("router_version")
        if not isinstance(version, str) or not version:
            raise BundleError(f"{path}: field 'router_version' must be a non-empty string")
        info = {k: v for k, v in doc.items() if k not in ("format", *_OUR_KEYS)}
        return cls(FORMAT_VERSION, version, dict(files), info)

    def verify(self, bundle_dir: Path) -> None:
        for name, digest in self.files.items():
            p = bundle_dir / name
            if p.is_symlink():
                raise BundleError(f"{bundle_dir}: integrity check failed: {name} is a symlink")
            if not p.is_file():
                raise BundleError(f"{bundle_dir}: integrity check failed: {name} is missing")
            actual = sha256_file(p)
            if actual != digest:
                raise BundleError(
                    f"{bundle_dir}: integrity check failed: checksum of {name} is "
                    f"{actual[:12]}..., manifest says {digest[:12]}... (modified or corrupted)"
                )
        listed = {*self.files, MANIFEST}
        extra = sorted(p.name for p in bundle_dir.iterdir() if p.name not in listed)
        if extra:
            raise BundleError(
                f"{bundle_dir}: integrity check failed: {', '.join(extra)} "
                "not listed in the manifest"
            )

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "format_version": self.format_version,
            "router_version": self.router_version,
            **self.info,
            "files": self.files,
        }
        return json.dumps(doc, indent=2, sort_keys=False)


def _check_ours(doc: dict[str, Any], path: Path) -> None:
    """Refuse, as not ours, a manifest naming another format or lacking our fields."""
    named = doc.get("format", doc.get("schema"))
    if named is not None and named != FORMAT:
        key = "format" if "format" in doc else "schema"
        raise BundleError(
            f"{path}: not a tier-router bundle (its manifest says {key} {named!r:.60}; a "
            f"tier-router bundle's says format {FORMAT!r})"
        )
    missing = [k for k in _OUR_KEYS if k not in doc]
    if missing and named is None:
        raise BundleError(
            f"{path}: not a tier-router bundle (its manifest has no {', '.join(missing)}; "
            "point at the directory `tier-router train` wrote)"
        )
    if missing:
        raise BundleError(f"{path}: damaged tier-router manifest: no {', '.join(missing)}")
    fv = doc.get("format_version")
    if isinstance(fv, bool) or not isinstance(fv, int):
        raise BundleError(
            f"{path}: not a tier-router bundle (format_version {fv!r:.60} is not an integer)"
        )


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A model's arrays as one uncompressed .npz (what read_arrays reads)."""
    import numpy as np

    with path.open("wb") as f:
        named: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        np.savez(f, **named)
    return path


def read_arrays(path: Path, names: Collection[str]) -> dict[str, np.ndarray]:
    """Exactly the named float32 / int64 arrays of a .npz, without pickle; ValueError
    names what is wrong (missing, extra or odd arrays, a damaged or oversized file)."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as zf:
            if sum(i.file_size for i in zf.infolist()) > _MAX_ARCHIVE_BYTES:
                raise ValueError(f"{path.name}: arrays too large")
        with np.load(path, allow_pickle=False) as z:
            found = {n.removesuffix(".npy") for n in z.files}
            if found != set(names):
                raise ValueError(
                    f"{path.name}: holds arrays {sorted(found)}, expected {sorted(names)}"
                )
            out = {n: z[n] for n in names}
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"{path.name}: unreadable arrays ({type(e).__name__}: {e})") from None
    for n, a in out.items():
        if a.dtype not in (np.float32, np.int64) or a.ndim > 2:
            raise ValueError(f"{path.name}: array {n!r} is {a.dtype} {a.shape}")
    return out


def write_manifest(bundle_dir: Path, router_version: str, info: dict[str, Any]) -> Manifest:
    files = {
        p.name: sha256_file(p)
        for p in sorted(bundle_dir.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    for name in files:
        check_name(name)
    m = Manifest(FORMAT_VERSION, router_version, files, {**info, "runtime": runtime_versions()})
    (bundle_dir / MANIFEST).write_text(m.to_json() + "\n", encoding="utf-8")
    return m


# Files that say how a bundle was made, not what it decides.
NOT_DECISIONS = frozenset({MANIFEST, REPORT_FILE})


def decision_digest(bundle_dir: Path) -> str:
    """sha256 over every file that can change a decision (names and contents), so two
    bundles share a router version's hash exactly when they route and judge alike."""
    h = hashlib.sha256()
    for p in sorted(bundle_dir.iterdir()):
        if p.is_file() and p.name not in NOT_DECISIONS:
            h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def seal_bundle(bundle_dir: Path, kind: str, info: dict[str, Any]) -> Manifest:
    """A writer's last step: name the version `KIND-YYYYmmdd-HHMMSS-DIGEST8` after what
    decides (decision_digest) and write the manifest, with `created_at` now."""
    version = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{decision_digest(bundle_dir)[:8]}"
    stamped: dict[str, Any] = {"created_at": None, **info}  # first key, as it always was
    stamped["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return write_manifest(bundle_dir, version, stamped)


@contextlib.contextmanager
def staged_bundle(target: Path, *, replace: bool) -> Iterator[Path]:
    """A fresh directory beside `target` to write a bundle into; on success it is renamed
    into place (the old bundle, with `replace`, renamed aside first and then removed), on
    failure removed. A reader, a hot swap included, never sees a half-written bundle."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if not (replace and target.exists()):
            tmp.rename(target)  # fails rather than merge if someone created it meanwhile
            return
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
        try:
            tmp.rename(target)
        except BaseException:
            old.rename(target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_bundle(path: str | Path) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """A directory to read the bundle from; archives are extracted safely to a temp dir."""
    p = Path(path)
    if p.is_dir():
        return p, None
    if not p.exists():
        raise BundleError(f"{p}: bundle not found")
    tmp = tempfile.TemporaryDirectory(prefix="tier-router-bundle-")
    try:
        _extract(p, Path(tmp.name))
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        tmp.cleanup()
        raise BundleError(f"{p}: damaged bundle archive ({type(e).__name__}: {e})") from None
    except BaseException:
        tmp.cleanup()
        raise
    return Path(tmp.name), tmp


def _extract(archive: Path, dest: Path) -> None:
    total = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = _member_name(info.filename, archive)
                total += info.file_size
                if total > _MAX_ARCHIVE_BYTES:
                    raise BundleError(f"{archive}: archive too large")
                with zf.open(info) as src, (dest / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        return
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with tf` below
    except tarfile.TarError as e:
        raise BundleError(f"{archive}: not a bundle directory, .tar.gz or .zip ({e})") from None
    with tf:
        for member in tf.getmembers():
            if member.isdir():
                continue
            if not member.isfile():
                raise BundleError(f"{archive}: archive entry {member.name!r} is not a regular file")
            name = _member_name(member.name, archive)
            total += member.size
            if total > _MAX_ARCHIVE_BYTES:
                raise BundleError(f"{archive}: archive too large")
            entry = tf.extractfile(member)
            if entry is None:
                raise BundleError(f"{archive}: cannot read entry {member.name!r}")
            with entry, (dest / name).open("wb") as out:
                shutil.copyfileobj(entry, out)


def _member_name(raw: str, archive: Path) -> str:
    """Entries may sit under one top folder; anything escaping it is refused."""
    parts = [x for x in raw.replace("\\", "/").split("/") if x not in ("", ".")]
    if raw.startswith(("/", "\\")) or ".." in parts or len(parts) > 2 or not parts:
        raise BundleError(f"{archive}: archive entry {raw!r} escapes the bundle directory")
    try:
        return check_name(parts[-1])
    except BundleError as e:
        raise BundleError(f"{archive}: {e}") from None


def pack_bundle(bundle_dir: Path, out: Path) -> Path:
    """Write a .tar.gz of a bundle directory (flat, one top folder)."""
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(bundle_dir.iterdir()):
            if p.is_file():
                tf.add(p, arcname=f"{bundle_dir.name}/{p.name}")
    return out
