"""Builds the bundle's ONNX model: static-embedding pooling, then the fitted predictor.

Inputs: token_ids int64 [B, L] (padded with the id one past the vocab), hand float
[B, F] and, for the accurate featurizer, dense float [B, 384].
Output: p_pass float [B, tiers].
The pooling lives in the graph so one ONNX Runtime call does all the numeric work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8  # what onnxruntime >= 1.14 reads


@dataclass
class GraphBuilder:
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    _n: int = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        from onnx import numpy_helper

        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def l2_normalize(self, x: str) -> str:
        sq = self.op("ReduceSumSquare", [x], axes=[1], keepdims=1)
        norm = self.op("Sqrt", [sq])
        norm = self.op("Max", [norm, self.const(np.array(1e-12, dtype=np.float32))])
        return self.op("Div", [x, norm])


def pooled_embedding(b: GraphBuilder, table: np.ndarray) -> str:
    """L2-normalised sum of table rows for token_ids (the mean's scale cancels).

    A zero row is appended at index len(table): batches pad with that id, so padding
    adds nothing and the graph needs no mask input. Few nodes matter: each ONNX
    Runtime kernel launch costs microseconds on the single-request path.
    """
    padded = np.vstack([table, np.zeros((1, table.shape[1]), table.dtype)]).astype(np.float32)
    rows = b.op("Gather", [b.const(padded, "static_table"), "token_ids"], axis=0)  # [B, L, D]
    summed = b.op("ReduceSum", [rows, b.const(np.array([1], dtype=np.int64))], keepdims=0)
    return b.op("LpNormalization", [summed], axis=1, p=2)


def build_model(
    b: GraphBuilder,
    output: str,
    *,
    n_hand: int,
    n_tiers: int,
    dense_dims: int | None,
    doc: str,
    path: Path,
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "tokens"]),
        helper.make_tensor_value_info("hand", TensorProto.FLOAT, ["batch", n_hand]),
    ]
    if dense_dims:
        inputs.append(
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", dense_dims])
        )
    b.nodes.append(helper.make_node("Identity", [output], ["p_pass"]))
    outputs = [helper.make_tensor_value_info("p_pass", TensorProto.FLOAT, ["batch", n_tiers])]
    graph = helper.make_graph(b.nodes, "tier_router", inputs, outputs, initializer=b.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="tier-router",
        doc_string=doc,
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
