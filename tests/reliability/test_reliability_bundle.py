"""Bundle safety beyond checksums: paths outside the bundle, symlinks, unlisted files,
oversized and damaged archives. Loading refuses each with a BundleError naming it."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from realdata import link_archive

import router.bundle as bundle_mod
from router import BundleError, Router
from router.bundle import MANIFEST, Manifest, pack_bundle, sha256_file


@pytest.fixture
def copy(trained_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(trained_bundle, dst)
    return dst


def _edit_manifest(b: Path, **files: str | None) -> None:
    doc = json.loads((b / MANIFEST).read_text())
    for name, digest in files.items():
        if digest is None:
            doc["files"].pop(name)
        else:
            doc["files"][name] = digest
    (b / MANIFEST).write_text(json.dumps(doc))


def test_untouched_copy_loads(copy: Path) -> None:
    assert Router.load(copy).route("hi").tier


@pytest.mark.parametrize("name", ["../outside.json", "/etc/passwd.json", "sub/x.json", "x.pkl"])
def test_manifest_listing_a_path_outside_the_bundle_is_refused(copy: Path, name: str) -> None:
    (copy.parent / "outside.json").write_text("{}")
    _edit_manifest(copy, **{name: sha256_file(copy / "policy.json")})
    with pytest.raises(BundleError, match=r"unsafe file name|not allowed"):
        Router.load(copy)


def test_symlinked_file_is_refused_even_with_the_right_checksum(copy: Path) -> None:
    real = copy.parent / "policy-elsewhere.json"
    shutil.move(copy / "policy.json", real)
    os.symlink(real, copy / "policy.json")
    with pytest.raises(BundleError, match=r"policy\.json"):
        Router.load(copy)


def test_symlinked_bundle_directory_entries_in_archives_are_refused(tmp_path: Path) -> None:
    arc = link_archive(tmp_path / "link.tar.gz", "b/model.onnx", tarfile.LNKTYPE, "b/policy.json")
    with pytest.raises(BundleError, match="not a regular file"):
        Router.load(arc)


def test_oversized_archive_is_refused(copy: Path, tmp_path: Path, monkeypatch) -> None:
    arc = pack_bundle(copy, tmp_path / "b.tar.gz")
    monkeypatch.setattr(bundle_mod, "_MAX_ARCHIVE_BYTES", 64 * 1024)
    with pytest.raises(BundleError, match="archive too large"):
        Router.load(arc)
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in copy.iterdir():
            zf.write(p, f"b/{p.name}")
    with pytest.raises(BundleError, match="archive too large"):
        Router.load(z)


def test_archive_with_too_deep_entries_is_refused(tmp_path: Path) -> None:
    z = tmp_path / "deep.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/b/c/model.onnx", b"x")
    with pytest.raises(BundleError, match="escapes"):
        Router.load(z)


def test_extra_unlisted_file_is_refused(copy: Path) -> None:
    (copy / "extra.json").write_text('{"surprise": true}')
    with pytest.raises(BundleError, match=r"extra\.json.*not listed"):
        Router.load(copy)


def test_a_file_the_runtime_reads_must_be_listed(copy: Path) -> None:
    """Today static_tokenizer.json can be dropped from the manifest and then replaced
    without any checksum failing: the runtime reads it unverified."""
    _edit_manifest(copy, **{"static_tokenizer.json": None})
    with pytest.raises(BundleError, match=r"static_tokenizer\.json"):
        Router.load(copy)


@pytest.mark.parametrize("kind", ["truncated-tgz", "corrupt-zip"])
def test_damaged_archive_is_a_bundle_error_naming_it(copy: Path, tmp_path: Path, kind: str) -> None:
    if kind == "truncated-tgz":
        arc = pack_bundle(copy, tmp_path / "b.tar.gz")
        arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    else:
        arc = tmp_path / "b.zip"
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in copy.iterdir():
                zf.write(p, f"b/{p.name}")
        data = bytearray(arc.read_bytes())
        data[len(data) // 3] ^= 0xFF
        arc.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape(str(arc))):
        Router.load(arc)


def test_manifest_is_never_executed_or_unpickled(copy: Path) -> None:
    """A manifest is JSON; a pickle-looking payload is just unreadable text."""
    (copy / MANIFEST).write_bytes(b"\x80\x04\x95cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Manifest.read(copy)
