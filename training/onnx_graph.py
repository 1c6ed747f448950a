"""Builds the bundle's ONNX models from their definitions in router/.

model.onnx is generated from router.softmax_sets.SoftmaxSets (export_model writes its
arrays beside it, for the runtime's single-request path).

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

from router.bundle import MODEL_FILE, MODEL_WEIGHTS, write_arrays
from router.router import FEATURES_INPUT
from router.softmax_sets import SoftmaxSets

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

    def softmax_sets(self, x: str, model: SoftmaxSets) -> str:
        """The graph of router.softmax_sets.SoftmaxSets.predict, op for op: logits =
        x @ weights + bias, a Softmax over a [B, sets, width] view, then @ rates. Every
        model family exports this one form."""
        logits = self.op(
            "Add",
            [
                self.op("MatMul", [x, self.const(model.weights, "weights")]),
                self.const(model.bias, "bias"),
            ],
        )
        shape = self.const(np.array([0, model.sets, model.width], dtype=np.int64), "set_shape")
        w = self.op("Softmax", [self.op("Reshape", [logits, shape])], axis=-1)
        flat = self.op(
            "Reshape", [w, self.const(np.array([0, model.weights.shape[1]], dtype=np.int64))]
        )
        return self.op("MatMul", [flat, self.const(model.rates, "rates")])


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


def export_model(model: SoftmaxSets, out_dir: Path, doc: str) -> None:
    """model.onnx and model_weights.npz: the graph and the arrays it was generated from."""
    b = GraphBuilder()
    p_out = b.softmax_sets(FEATURES_INPUT, model)
    build_model(b, p_out, dims=model.dims, n_tiers=model.tiers, doc=doc, path=out_dir / MODEL_FILE)
    write_arrays(out_dir / MODEL_WEIGHTS, model.arrays())
