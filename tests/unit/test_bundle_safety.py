import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from router.bundle import BundleError, Manifest, check_name, open_bundle, write_manifest


def _mini_bundle(d: Path) -> Path:
    d.mkdir()
    (d / "policy.json").write_text("{}")
    (d / "ladder.toml").write_text("")
    write_manifest(d, "v1", {})
    return d


def test_manifest_roundtrip_and_tamper_detection(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path / "b")
    m = Manifest.read(b)
    m.verify(b)
    assert m.router_version == "v1" and "onnxruntime" in m.info["runtime"]
    (b / "policy.json").write_text('{"x": 1}')
    with pytest.raises(BundleError, match=r"integrity check failed: checksum of policy\.json"):
        m.verify(b)
    (b / "policy.json").unlink()
    with pytest.raises(BundleError, match=r"integrity check failed: policy\.json is missing"):
        m.verify(b)


def test_manifest_rejects_bad_versions_and_names(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path / "b")
    doc = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version"):
        Manifest.read(b)
    for bad in ("../x.json", "/etc/passwd.json", "a/b.json", "model.pkl", ".hidden.json"):
        with pytest.raises(BundleError):
            check_name(bad)


def test_archive_entries_that_escape_are_rejected(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        data = b"{}"
        info = tarfile.TarInfo("../../escape.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="escapes"):
        open_bundle(evil)
    assert not (tmp_path.parent / "escape.json").exists()
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tf:
        info = tarfile.TarInfo("b/policy.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(BundleError, match="not a regular file"):
        open_bundle(link)
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../evil.json", "{}")
    with pytest.raises(BundleError, match="escapes"):
        open_bundle(z)
