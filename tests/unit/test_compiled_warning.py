"""Never slow in silence: a missing compiled extension is said once, a chosen one not."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from router import compiled

REPO = Path(__file__).resolve().parents[2]


def test_missing_kernels_warn_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compiled.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(compiled, "_warned", False)
    with pytest.warns(RuntimeWarning, match="not built"):
        assert compiled.warn_if_missing(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not compiled.warn_if_missing(None)  # once per process


def test_chosen_python_kernels_and_built_ones_do_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "1")
        assert not compiled.warn_if_missing(None)
        monkeypatch.delenv(compiled.PURE_PYTHON_ENV)
        assert not compiled.warn_if_missing(sys)  # any module stands for built kernels


def test_a_router_without_the_extension_says_so(trained_bundle: Path) -> None:
    """A process where router._hotpath cannot be imported (as after a clean of an
    editable checkout) warns when it loads a bundle and reports route_path 'python'."""
    code = (
        "import sys, warnings\n"
        "sys.modules['router._hotpath'] = None  # import fails, as when it was never built\n"
        "warnings.simplefilter('always')\n"
        "from router import Router\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    r = Router.load({str(trained_bundle)!r})\n"
        "    r.route('hello'); Router.load(r.source)\n"
        "print(r.route_path, sum('not built' in str(x.message) for x in w))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != compiled.PURE_PYTHON_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "1"]
