"""The in-process router: load a bundle once, then text in, tier decision out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router.bundle import (
    CASCADE_FILE,
    ENCODER_MODEL,
    ENCODER_TOKENIZER,
    FEATURIZER_FILE,
    JOINT_SPACE_FILE,
    LADDER_FILE,
    MODEL_FILE,
    MODEL_WEIGHTS,
    POLICY_FILE,
    STATIC_TABLE,
    STATIC_TOKENIZER,
    VERIFIER_FILE,
    VERIFIER_MODEL,
    VERIFIER_WEIGHTS,
    BundleError,
    Manifest,
    open_bundle,
    read_arrays,
)
from router.cascade import CascadeFile
from router.compiled import warn_if_missing
from router.decision import Decision
from router.featurizer import Featurizer, FeaturizerConfig, pad_ids
from router.joint_space import JointSpace
from router.ladder import Ladder, LadderError
from router.policy import ThresholdPolicy
from router.prompt_features import PromptFeatures
from router.softmax_sets import SoftmaxSets
from router.verifier import VERIFIER_INPUT, Verifier

FEATURES_INPUT = "features"
BATCH_CHUNK = 256
TOLERANCE = 1e-5  # largest P(pass) difference between a model's arrays and its graph
EMPTY_PROMPT_NOTE = "empty or whitespace-only prompt: no text to route by; "


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Router:
    """Thread-safe: ONNX Runtime sessions allow concurrent runs, the static embedder's
    chunk cache takes a lock to grow, the compiled scoring runs under the GIL (and looks
    its table up again after any call back into Python), and nothing else mutates."""

    def __init__(
        self,
        *,
        manifest: Manifest,
        ladder: Ladder,
        policy: ThresholdPolicy,
        featurizer: Featurizer,
        space: JointSpace,
        model: Any,
        encoder: Any | None,
        source: Path,
        sets: SoftmaxSets,
    ):
        if policy.n_tiers != len(ladder):
            raise BundleError(
                f"{source}: policy has {policy.n_tiers} tiers, ladder has {len(ladder)}"
            )
        self.manifest = manifest
        self.ladder = ladder
        self.policy = policy
        self.featurizer = featurizer
        self.space = space
        self._model = model
        self._encoder = encoder
        self.source = source
        # Set by Router.load when the bundle carries an answer verifier and cascade policy.
        self.verifier: Verifier | None = None
        self.cascade: CascadeFile | None = None
        self._needs_dense = encoder is not None
        inputs = model.get_inputs()
        if [i.name for i in inputs] != [FEATURES_INPUT]:
            raise BundleError(
                f"{source}: {MODEL_FILE} takes inputs {[i.name for i in inputs]}, "
                f"expected [{FEATURES_INPUT!r}]; re-train the bundle with this tier-router"
            )
        self._decision_fields = [  # what a decision for each tier always carries
            {
                "tier": t.name,
                "tier_index": i,
                "model_id": t.model_id,
                "max_tokens": t.max_tokens,
                "router_version": manifest.router_version,
            }
            for i, t in enumerate(ladder.tiers)
        ]
        self._tier_names = tuple(ladder.names)
        out = model.get_outputs()[0]
        self._out_name = out.name
        self._sets = sets
        self._check_sets_match_the_graph()
        if self.featurizer.embedder.index is None:
            warn_if_missing()

    def _check_sets_match_the_graph(self) -> None:
        """Refuse a bundle whose arrays and ONNX graph give different P(pass)."""
        probes = self._sets.probe_inputs()
        try:
            expected = self._model.run([self._out_name], {FEATURES_INPUT: probes})[0]
        except Exception as e:  # onnxruntime raises its own types, e.g. on a width mismatch
            raise BundleError(
                f"{self.source}: {MODEL_WEIGHTS} does not fit {MODEL_FILE}: {e}"
            ) from None
        got = np.array([self._sets.p_pass_one(x) for x in probes])
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
        if not diff <= TOLERANCE:
            raise BundleError(
                f"{self.source}: {MODEL_FILE} integrity check failed: {MODEL_WEIGHTS} and "
                f"the graph disagree (max P(pass) difference {diff:.3g}); re-train the bundle"
            )

    @property
    def sets(self) -> SoftmaxSets:
        """The model's arrays (model_weights.npz): what P(pass) is computed from."""
        return self._sets

    @property
    def route_path(self) -> str:
        """'compiled' when route() pools and scans the prompt with router/_hotpath.c,
        'python' without it (no C compiler at install, or TIER_ROUTER_PURE_PYTHON=1)."""
        return "compiled" if self.featurizer.embedder.index is not None else "python"

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
            for name in (
                MODEL_FILE,
                MODEL_WEIGHTS,
                LADDER_FILE,
                POLICY_FILE,
                FEATURIZER_FILE,
                STATIC_TOKENIZER,
                STATIC_TABLE,
                JOINT_SPACE_FILE,
            ):
                if name not in manifest.files:
                    raise BundleError(f"{path}: bundle manifest does not list {name}")
            try:
                ladder = Ladder.load(bundle_dir / LADDER_FILE)
                policy = ThresholdPolicy.from_json((bundle_dir / POLICY_FILE).read_text("utf-8"))
                config = FeaturizerConfig.from_json(
                    (bundle_dir / FEATURIZER_FILE).read_text("utf-8")
                )
                featurizer = Featurizer.from_bundle(config, bundle_dir)
                space = JointSpace.from_json((bundle_dir / JOINT_SPACE_FILE).read_text("utf-8"))
                sets = SoftmaxSets.from_arrays(
                    read_arrays(bundle_dir / MODEL_WEIGHTS, ("weights", "bias", "rates", "sets"))
                )
                if space.center and len(space.center) != featurizer.dims:
                    raise ValueError(
                        f"{JOINT_SPACE_FILE}: center has {len(space.center)} values, the "
                        f"static table {featurizer.dims} dimensions"
                    )
            except (LadderError, ValueError, KeyError, OSError) as e:
                raise BundleError(f"{path}: invalid bundle: {e}") from None
            model = _session(bundle_dir / MODEL_FILE, threads)
            encoder = None
            if config.kind == "accurate":
                for name in (ENCODER_MODEL, ENCODER_TOKENIZER):
                    if name not in manifest.files:
                        raise BundleError(f"{path}: accurate bundle lacks {name}")
                encoder = _session(bundle_dir / ENCODER_MODEL, threads)
            router = cls(
                sets=sets,
                manifest=manifest,
                ladder=ladder,
                policy=policy,
                featurizer=featurizer,
                space=space,
                model=model,
                encoder=encoder,
                source=Path(path),
            )
            router._load_cascade(bundle_dir, manifest, threads)
            return router
        finally:
            if tmp is not None:
                tmp.cleanup()

    def _load_cascade(self, bundle_dir: Path, manifest: Manifest, threads: int) -> None:
        """The answer verifier and cascade policy, when the bundle was trained on answers."""
        files = (VERIFIER_MODEL, VERIFIER_WEIGHTS, VERIFIER_FILE, CASCADE_FILE)
        present = [n for n in files if n in manifest.files]
        if not present:
            return
        if len(present) != len(files):
            raise BundleError(
                f"{self.source}: bundle has {present} but not all of the cascade's files"
            )
        try:
            verifier = Verifier.load(bundle_dir, lambda text: self.featurizer.embedding(text)[0])
            cascade = CascadeFile.from_json((bundle_dir / CASCADE_FILE).read_text("utf-8"))
        except (ValueError, KeyError, OSError) as e:
            raise BundleError(f"{self.source}: invalid cascade: {e}") from None
        if verifier.spec.tiers != self._tier_names:
            raise BundleError(f"{self.source}: the verifier was fitted for other tiers")
        try:
            cascade.check(len(self.ladder), self.ladder.second_opinion is not None)
        except ValueError as e:
            raise BundleError(f"{self.source}: the cascade does not fit its ladder: {e}") from None
        probes = np.random.default_rng(0).normal(size=(8, verifier._w.shape[1])).astype(np.float32)
        session = _session(bundle_dir / VERIFIER_MODEL, threads)
        expected = session.run(None, {VERIFIER_INPUT: probes})[0]
        diff = float(np.abs(verifier.p_pass_matrix(probes) - expected).max())
        if not diff <= TOLERANCE:
            raise BundleError(
                f"{self.source}: {VERIFIER_MODEL} integrity check failed: its weights and its "
                f"graph disagree (max P(pass) difference {diff:.3g}); re-train the bundle"
            )
        self.verifier, self.cascade = verifier, cascade

    # -- scoring ---------------------------------------------------------------------

    def _dense(self, texts: list[str]) -> np.ndarray:
        assert self._encoder is not None, "only accurate bundles carry an encoder"
        rows = [self.featurizer.encoder_ids(t) for t in texts]
        ids, mask = pad_ids(rows)
        out = self._encoder.run(None, {"input_ids": ids, "attention_mask": mask.astype(np.int64)})
        return np.asarray(out[0], dtype=np.float32)

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The ONNX model's input for a batch of prompts."""
        emb, hand = self.featurizer.static_batch(texts)
        dense = self._dense(texts) if self._needs_dense else None
        return {FEATURES_INPUT: self.space.apply(emb, hand, dense)}

    def p_pass_batch(self, texts: list[str]) -> np.ndarray:
        """(n, tiers) P(pass), cheapest tier first."""
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        out = np.zeros((len(texts), len(self.ladder)), dtype=np.float32)
        # Chunks bound the memory of one run (and of the encoder batch, when accurate).
        for start in range(0, len(texts), BATCH_CHUNK):
            chunk = texts[start : start + BATCH_CHUNK]
            scores = self._model.run([self._out_name], self.feeds(chunk))[0]
            out[start : start + len(chunk)] = scores
        return out

    # -- decisions -------------------------------------------------------------------

    def _decision(self, p: list[float], idx: int, text: str) -> Decision:
        # The reason is formatted only if read (Decision.routed); an empty prompt says so.
        note = "" if text and not text.isspace() else EMPTY_PROMPT_NOTE
        return Decision.routed(
            {
                **self._decision_fields[idx],
                "p_pass": dict(zip(self._tier_names, p, strict=True)),
            },
            self.policy.explain,
            self._tier_names,
            p,
            idx,
            note,
        )

    def _p_one(self, text: str, keep: list[Any] | None = None) -> list[float]:
        """P(pass) for one prompt: the latency-critical path. The static embedding and
        hand features come from the compiled kernels when built (router.compiled); the
        joint vector and the model are numpy (JointSpace.apply_one, SoftmaxSets.p_pass_one).
        `keep` (route_with_features) receives the embedding and the hand features, which
        are then computed even when the model does not use them."""
        f = self.featurizer
        emb, stats = f.embedding(text)
        if keep is None:
            hand = f.hand(text, stats) if self.space.uses_hand else []
        else:
            keep += (emb, f.hand(text, stats))
            hand = keep[1] if self.space.uses_hand else []
        dense = self._dense([text])[0] if self._needs_dense else None
        return self._sets.p_pass_one(self.space.apply_one(emb, hand, dense))

    def route(self, text: str) -> Decision:
        _check_text(text, "text")
        p = self._p_one(text)
        return self._decision(p, self.policy.choose_one(p), text)

    @property
    def features_note(self) -> str | None:
        """Why this bundle's decisions come without loggable prompt features (None: they
        come with them). An accurate bundle also routes on its encoder's dense vector,
        which the static embedding and hand features do not carry."""
        return None if not self._needs_dense else "accurate_featurizer"

    def route_with_features(self, text: str) -> tuple[Decision, PromptFeatures | None]:
        """`route(text)` and the prompt's features from the same computation (no second
        featurization): the static embedding and hand features the decision was made
        from, with the featurizer's digest, for an outcome log that keeps no text. The
        features are None when `features_note` says why (an accurate bundle)."""
        _check_text(text, "text")
        kept: list[Any] = []
        p = self._p_one(text, kept)
        d = self._decision(p, self.policy.choose_one(p), text)
        if self._needs_dense:
            return d, None
        return d, PromptFeatures.of(self.featurizer.digest, kept[0], kept[1])

    def prompt_features(self, text: str) -> PromptFeatures | None:
        """The features alone (batch serving logs them once the walks end): the values
        `route_with_features` returns for the same text; None as it says."""
        _check_text(text, "text")
        if self._needs_dense:
            return None
        emb, stats = self.featurizer.embedding(text)
        return PromptFeatures.of(self.featurizer.digest, emb, self.featurizer.hand(text, stats))

    def route_batch(self, texts: list[str]) -> list[Decision]:
        if isinstance(texts, str | bytes | bytearray | Mapping) or not hasattr(texts, "__iter__"):
            raise TypeError(
                f"route_batch() takes a list of str, got {type(texts).__name__}; "
                "use route() for a single prompt"
            )
        texts = list(texts)
        p = self.p_pass_batch(texts)
        idx = self.policy.choose(p)
        rows = zip(p.tolist(), idx, texts, strict=True)
        return [self._decision(row, int(i), t) for row, i, t in rows]


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str (the prompt text), got {type(text).__name__}")
