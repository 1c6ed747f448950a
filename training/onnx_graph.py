"""Builds the bundle's ONNX model: the fitted predictor on the joint-space vector.

Input: features float [B, D], the unit-norm joint vector of router.joint_space (static
embedding, MiniLM vector for accurate bundles, scaled hand features).
Output: p_pass float [B, tiers]. Featurization stays outside the graph: pooling with a
per-chunk cache and a few numpy vector operations cost less than ONNX Runtime nodes
on the single-request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.cluster_predictor import BIAS, CENTROIDS, RATES, SET_SHAPE
from router.router import FEATURES_INPUT

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

    def const(self, value: np.ndarray, stem: str = "c", *, exact: bool = False) -> str:
        """An initializer; `exact` keeps the name as given, for readers that look it up."""
        from onnx import numpy_helper

        n = stem if exact else self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def softmax_sets(
        self, x: str, weights: np.ndarray, bias: np.ndarray, rates: np.ndarray, g: int, k: int
    ) -> str:
        """P(pass) as soft-membership-weighted rates: logits x @ weights + bias, a softmax
        within each of `g` sets of `k` columns, then @ rates. Every model family exports
        this one form; exact names, since router.cluster_predictor reads the weights back
        for single requests."""
        logits = self.op(
            "Add",
            [
                self.op("MatMul", [x, self.const(weights, CENTROIDS, exact=True)]),
                self.const(bias, BIAS, exact=True),
            ],
        )
        shape = self.const(np.array([0, g, k], dtype=np.int64), SET_SHAPE, exact=True)
        w = self.op("Softmax", [self.op("Reshape", [logits, shape])], axis=-1)
        flat = self.op("Reshape", [w, self.const(np.array([0, g * k], dtype=np.int64))])
        return self.op("MatMul", [flat, self.const(rates, RATES, exact=True)])


def build_model(
    b: GraphBuilder,
    output: str,
    *,
    dims: int,
    n_tiers: int,
    doc: str,
    path: Path,
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(FEATURES_INPUT, TensorProto.FLOAT, ["batch", dims])]
    # Rename the producer's output rather than add an Identity: every node costs a kernel
    # launch on the single-request path.
    producer = next(n for n in b.nodes if output in n.output)
    producer.output[list(producer.output).index(output)] = "p_pass"
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
