"""The in-process router: load a bundle once, then text in, tier decision out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router.bundle import BundleError, Manifest, open_bundle
from router.decision import Decision
from router.featurizer import (
    ENCODER_MODEL,
    ENCODER_TOKENIZER,
    FEATURIZER_FILE,
    STATIC_TOKENIZER,
    Featurizer,
    FeaturizerConfig,
    pad_ids,
)
from router.ladder import Ladder, LadderError, Tier
from router.policy import POLICY_FILE, ThresholdPolicy

MODEL_FILE = "model.onnx"
LADDER_FILE = "ladder.toml"
BATCH_CHUNK = 256


def _inference_settings(tier: Tier) -> dict[str, Any]:
    """Converse inferenceConfig for a tier, built once per bundle rather than per call."""
    inference: dict[str, Any] = {"maxTokens": tier.max_tokens}
    if tier.temperature is not None:
        inference["temperature"] = tier.temperature
    if tier.top_p is not None:
        inference["topP"] = tier.top_p
    return inference


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Router:
    """Thread-safe: ONNX Runtime sessions allow concurrent runs; nothing else mutates."""

    def __init__(
        self,
        *,
        manifest: Manifest,
        ladder: Ladder,
        policy: ThresholdPolicy,
        featurizer: Featurizer,
        model: Any,
        encoder: Any | None,
        source: Path,
    ):
        if policy.n_tiers != len(ladder):
            raise BundleError(
                f"{source}: policy has {policy.n_tiers} tiers, ladder has {len(ladder)}"
            )
        self.manifest = manifest
        self.ladder = ladder
        self.policy = policy
        self.featurizer = featurizer
        self._model = model
        self._encoder = encoder
        self.source = source
        self._needs_dense = encoder is not None
        self._inference = [_inference_settings(t) for t in ladder.tiers]
        out = model.get_outputs()[0]
        self._out_name = out.name

    @property
    def version(self) -> str:
        return self.manifest.router_version

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 1) -> Router:
        """Load and verify a bundle directory or archive; refuses checksum mismatches."""
        bundle_dir, tmp = open_bundle(path)
        try:
            try:
                manifest = Manifest.read(bundle_dir)
                manifest.verify(bundle_dir)
            except BundleError as e:
                if tmp is None:
                    raise
                raise BundleError(str(e).replace(str(bundle_dir), f"{path} (archive)")) from None
            for name in (MODEL_FILE, LADDER_FILE, POLICY_FILE, FEATURIZER_FILE, STATIC_TOKENIZER):
                if name not in manifest.files:
                    raise BundleError(f"{path}: bundle manifest does not list {name}")
            try:
                ladder = Ladder.load(bundle_dir / LADDER_FILE)
                policy = ThresholdPolicy.from_json((bundle_dir / POLICY_FILE).read_text("utf-8"))
                config = FeaturizerConfig.from_json(
                    (bundle_dir / FEATURIZER_FILE).read_text("utf-8")
                )
                featurizer = Featurizer.from_bundle(config, bundle_dir)
            except (LadderError, ValueError, KeyError, OSError) as e:
                raise BundleError(f"{path}: invalid bundle: {e}") from None
            model = _session(bundle_dir / MODEL_FILE, threads)
            encoder = None
            if config.kind == "accurate":
                for name in (ENCODER_MODEL, ENCODER_TOKENIZER):
                    if name not in manifest.files:
                        raise BundleError(f"{path}: accurate bundle lacks {name}")
                encoder = _session(bundle_dir / ENCODER_MODEL, threads)
            return cls(
                manifest=manifest,
                ladder=ladder,
                policy=policy,
                featurizer=featurizer,
                model=model,
                encoder=encoder,
                source=Path(path),
            )
        finally:
            if tmp is not None:
                tmp.cleanup()

    # -- scoring ---------------------------------------------------------------------

    def _dense(self, texts: list[str]) -> np.ndarray:
        assert self._encoder is not None, "only accurate bundles carry an encoder"
        rows = [self.featurizer.encoder_ids(t) for t in texts]
        ids, mask = pad_ids(rows)
        out = self._encoder.run(None, {"input_ids": ids, "attention_mask": mask.astype(np.int64)})
        return np.asarray(out[0], dtype=np.float32)

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        f = self.featurizer
        rows = [f.token_ids(t) for t in texts]
        ids, _ = pad_ids(rows, pad=f.pad_id)
        feeds = {
            "token_ids": ids,
            "hand": np.stack([f.hand(t, r) for t, r in zip(texts, rows, strict=True)]),
        }
        if self._needs_dense:
            feeds["dense"] = self._dense(texts)
        return feeds

    def p_pass_batch(self, texts: list[str]) -> np.ndarray:
        """(n, tiers) P(pass), cheapest tier first."""
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        out = np.zeros((len(texts), len(self.ladder)), dtype=np.float32)
        # Chunks bound the padded [batch, tokens, dims] gather inside the graph.
        for start in range(0, len(texts), BATCH_CHUNK):
            chunk = texts[start : start + BATCH_CHUNK]
            scores = self._model.run([self._out_name], self.feeds(chunk))[0]
            out[start : start + len(chunk)] = scores
        return out

    # -- decisions -------------------------------------------------------------------

    def _decision(self, p: np.ndarray, idx: int) -> Decision:
        tier = self.ladder.tiers[idx]
        return Decision(
            tier=tier.name,
            tier_index=idx,
            model_id=tier.model_id,
            max_tokens=tier.max_tokens,
            p_pass={n: float(v) for n, v in zip(self.ladder.names, p.tolist(), strict=True)},
            router_version=self.version,
            inference=dict(self._inference[idx]),
        )

    def _feeds_one(self, text: str) -> dict[str, np.ndarray]:
        """Single-prompt feeds without the padding loop: the latency-critical path."""
        f = self.featurizer
        ids = f.token_ids(text)
        feeds: dict[str, np.ndarray] = {
            "token_ids": np.array([ids], dtype=np.int64),
            "hand": f.hand(text, ids)[None, :],
        }
        if self._needs_dense:
            feeds["dense"] = self._dense([text])
        return feeds

    def route(self, text: str) -> Decision:
        _check_text(text, "text")
        p = self._model.run([self._out_name], self._feeds_one(text))[0][0]
        return self._decision(p, self.policy.choose_one(p.tolist()))

    def route_batch(self, texts: list[str]) -> list[Decision]:
        if isinstance(texts, str | bytes | bytearray | Mapping) or not hasattr(texts, "__iter__"):
            raise TypeError(
                f"route_batch() takes a list of str, got {type(texts).__name__}; "
                "use route() for a single prompt"
            )
        texts = list(texts)
        p = self.p_pass_batch(texts)
        idx = self.policy.choose(p)
        return [self._decision(p[i], int(idx[i])) for i in range(len(texts))]


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str (the prompt text), got {type(text).__name__}")
