import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from realdata import link_archive

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
    link = link_archive(tmp_path / "link.tar.gz", "b/policy.json", tarfile.SYMTYPE, "/etc/passwd")
    with pytest.raises(BundleError, match="not a regular file"):
        open_bundle(link)
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../evil.json", "{}")
    with pytest.raises(BundleError, match="escapes"):
        open_bundle(z)


FOREIGN_MANIFESTS = [
    {"name": "web-app", "version": "1.2.0", "files": ["index.js", "app.css"]},
    {"manifest_version": 3, "name": "a browser extension"},
    {"format": "acme-model-bundle", "format_version": 2, "router_version": "v1",
     "files": {"policy.json": "0" * 64}},
    {"schema": "acme.bundle/4", "format_version": 1, "files": {}},
]  # fmt: skip


@pytest.mark.parametrize("doc", FOREIGN_MANIFESTS)
def test_another_projects_manifest_is_not_a_tier_router_bundle(tmp_path: Path, doc: dict) -> None:
    from router import Router

    d = tmp_path / "other"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(doc))
    for read in (Manifest.read, Router.load):
        with pytest.raises(BundleError) as e:
            read(d)
        msg = str(e.value)
        assert "not a tier-router bundle" in msg and "upgrade" not in msg and str(d) in msg


def test_our_manifest_says_what_it_is_and_versions_are_told_apart(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path / "b")
    doc = json.loads((b / "manifest.json").read_text())
    assert doc["format"] == "tier-router-bundle" and "format" not in Manifest.read(b).info
    for fv, word in ((4, "upgrade tier-router"), (2, "re-train it")):
        (b / "manifest.json").write_text(json.dumps({**doc, "format_version": fv}))
        with pytest.raises(BundleError, match=word):
            Manifest.read(b)
    legacy = {k: v for k, v in doc.items() if k != "format"}  # bundles written before the field
    (b / "manifest.json").write_text(json.dumps(legacy))
    assert Manifest.read(b).router_version == "v1"
