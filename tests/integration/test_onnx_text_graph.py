"""`tier-router export-onnx`: the text-in graph routes as Router.route() does, on real
prompts, in Python and in Node, and hostile text gets a decision, never a crash."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from outcomes import read_outcomes
from router import Router
from router.ladder import Ladder
from tier_router.cli import main
from training.text_graph import (
    NAMES_OUTPUT,
    open_text_graph,
    run_text_graph,
)

REPO = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = REPO / "examples" / "node"
HOSTILE = (
    "",
    "   \n\t  ",
    "a" * 20_000,
    "word " * 6_000,
    "lone \ud800 surrogate \udfff here",
    "\x00\x01\x02 control \x1b[31m chars \x7f",
    "mixed 日本語 English русский العربية 😀 Ελληνικά İstanbul ß ǅ",
    "\u200b\u200d\ufeff zero width \u2028 separators \u3000 ideographic",
    "((((((((((((((((((((((((((((((((((((((((",
    '{"prompt": "json in json"}\n```python\nprint("x")\n```',
)


@pytest.fixture(scope="session")
def text_graph(
    trained_bundle: Path, small_outcomes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "router.onnx"
    args = ["export-onnx", "--bundle", str(trained_bundle), "--out", str(out)]
    assert main([*args, "--vocab-from", str(small_outcomes)]) == 0
    return out


@pytest.fixture(scope="session")
def graph_session(text_graph: Path) -> object:
    return open_text_graph(text_graph)


@pytest.fixture(scope="session")
def test_prompts(small_outcomes: Path) -> list[tuple[str, str]]:
    return [(r.id, r.prompt) for r in read_outcomes(small_outcomes, "test", scores=False)]


def _route(router: Router, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ds = [router.route(t) for t in texts]
    return np.array([list(d.p_pass.values()) for d in ds]), np.array([d.tier_index for d in ds])


def test_graph_routes_as_route_does_on_real_prompts(
    trained_bundle: Path, graph_session: object, test_prompts: list[tuple[str, str]]
) -> None:
    router = Router.load(trained_bundle)
    texts = [t for _, t in test_prompts]
    p, tier = run_text_graph(graph_session, texts)
    want_p, want_tier = _route(router, texts)
    diff = np.abs(p - want_p).max(axis=1)
    assert (tier == want_tier).mean() >= 0.99
    assert (diff <= 1e-3).mean() >= 0.9, f"max |dP| {diff.max():.4f}"
    assert diff.max() < 0.1
    # Where no approximation applies (every word known, no window), the graph is exact.
    short_known = [
        i for i, t in enumerate(texts) if len(t) < 400 and t.isascii() and diff[i] > 1e-4
    ]
    assert len(short_known) <= len(texts) // 5


def test_graph_carries_the_ladder(
    text_graph: Path, trained_bundle: Path, graph_session: object
) -> None:
    router = Router.load(trained_bundle)
    model = onnx.load(str(text_graph))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["tier_names"]) == router.ladder.names
    assert (
        Ladder.from_dict(__import__("tomllib").loads(meta["ladder_toml"])).names
        == router.ladder.names
    )
    assert meta["router_version"] == router.version
    names = graph_session.run([NAMES_OUTPUT], {"text": np.array(["x"], dtype=object)})[0]  # type: ignore[attr-defined]
    assert [str(n) for n in names] == router.ladder.names


def test_hostile_text_gets_a_decision(trained_bundle: Path, graph_session: object) -> None:
    router = Router.load(trained_bundle)
    p, tier = run_text_graph(graph_session, list(HOSTILE))
    assert p.shape == (len(HOSTILE), len(router.ladder))
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1 + 1e-6).all()
    assert ((tier >= 0) & (tier < len(router.ladder))).all()
    # One at a time gives the same as in a batch (padding never leaks between rows).
    alone, _ = run_text_graph(graph_session, list(HOSTILE), batch=1)
    assert np.abs(alone - p).max() < 1e-5
    # Empty and whitespace-only read as Python reads them: one unknown token.
    want, _ = _route(router, ["", "   \n\t  "])
    assert np.abs(p[:2] - want).max() < 1e-4


def test_export_refuses_what_it_cannot_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["export-onnx", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "r.onnx")])
    assert e.value.code == 2
    assert "no such bundle" in capsys.readouterr().err


def _node_or_skip() -> str:
    ci = os.environ.get("CI", "").lower() == "true"
    node = shutil.which("node")
    if node is None:
        if ci:
            pytest.fail("CI: `node` is not on PATH; examples/node needs Node.js >= 18")
        pytest.skip("`node` is not on PATH (Node.js >= 18 runs examples/node)")
    if not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        msg = "examples/node has no node_modules: run `npm ci` in examples/node"
        if ci:
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)
    return node


def test_node_example_routes_as_python(
    trained_bundle: Path,
    text_graph: Path,
    graph_session: object,
    test_prompts: list[tuple[str, str]],
) -> None:
    node = _node_or_skip()
    sample = [*test_prompts[:30], ("hostile", "a\ud800b \x00 日本語"), ("empty", "")]
    lines = [json.dumps({"id": i, "prompt": t}) for i, t in sample] + ["not json"]
    run = subprocess.run(
        [node, str(NODE_EXAMPLE / "route.mjs"), str(text_graph)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr  # the bad line is reported, the rest routed
    assert "stdin:33: invalid JSON" in run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    assert [g["id"] for g in got] == [i for i, _ in sample]
    router = Router.load(trained_bundle)
    texts = [t for _, t in sample]
    graph_p, _ = run_text_graph(graph_session, texts)
    want_tier = _route(router, texts)[1]
    names = router.ladder.names
    node_p = np.array([[g["p_pass"][n] for n in names] for g in got])
    node_tier = np.array([names.index(g["tier"]) for g in got])
    assert np.abs(node_p - graph_p).max() < 1e-6  # the same graph, the same numbers
    assert (node_tier == want_tier).mean() >= 0.98
    assert all(math.isfinite(v) for g in got for v in g["p_pass"].values())
