"""`tier-router export-onnx`: the whole fast router as one text-in ONNX graph.

The graph (training/text_graph.py) takes a batch of prompt strings and gives P(pass)
per tier and the chosen tier's index, so services in other languages route with their
ONNX Runtime binding; docs/onnx_router.md has the parity it keeps with `route()`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from tier_router.argtypes import (
    DefaultsHelpFormatter,
    add_bundle,
    existing_file,
    out_file,
    positive_int,
)

log = logging.getLogger("tier_router")
DEFAULT_MAX_CHUNKS = 200_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="write the router as one ONNX graph: prompt text in, P(pass) and tier out",
        description=(
            "One ONNX graph with a string input 'text' [batch] and outputs 'p_pass' "
            "[batch, tiers] and 'tier' [batch] (index into the ladder, whose names are in "
            "the graph's metadata 'tier_names'). Standard operators only (opset 20 and "
            "ai.onnx.ml): any ONNX Runtime binding runs it. Tokenization is a lookup of "
            "whole whitespace chunks: the tokenizer's words plus the chunks of the "
            "--vocab-from prompts; other chunks read as one unknown token."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_bundle(p)
    p.add_argument("--out", type=out_file, required=True, help="the .onnx file to write")
    p.add_argument(
        "--vocab-from",
        type=existing_file,
        action="append",
        default=[],
        metavar="OUTCOMES",
        help="outcomes JSONL(.gz) whose prompts' chunks join the vocabulary (repeatable)",
    )
    p.add_argument(
        "--split",
        default="train",
        help="split of --vocab-from files to read ('all' for every prompt)",
    )
    p.add_argument(
        "--max-chunks",
        type=positive_int,
        default=DEFAULT_MAX_CHUNKS,
        help="at most this many of the commonest --vocab-from chunks",
    )
    p.set_defaults(func=cmd_export_onnx)


def _prompts(files: list[Path], split: str | None) -> Iterator[str]:
    from outcomes import iter_outcomes

    for f in files:
        for rec in iter_outcomes(f, split, scores=False):
            yield rec.prompt


def cmd_export_onnx(a: argparse.Namespace) -> int:
    from training.text_graph import export_text_graph

    report = export_text_graph(a.bundle, a.out, _prompts(a.vocab_from, a.split), a.max_chunks)
    print(json.dumps(report, indent=2))
    return 0
