"""MLflow logging: one run per training, laid out for side-by-side comparison in the UI.

Tracking URI from MLFLOW_TRACKING_URI (MLflow's default local store when unset). Each
run logs params, held-out metrics (test split when the file has one, else out-of-fold
validation), the curve/calibration plots, the bundle directory, and the ONNX model
with MLflow's ONNX flavor, registered as a new version of a registered model.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

from training.registry import DEFAULT_REGISTERED_MODEL, LADDER_TAG

log = logging.getLogger(__name__)
EXPERIMENT = "tier-router"


class TrackingError(RuntimeError):
    """MLflow refused or failed the run; the bundle itself was written."""


def _flat(prefix: str, d: dict[str, Any], out: dict[str, float]) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flat(key + ".", v, out)
        elif isinstance(v, bool) or (isinstance(v, int | float) and math.isfinite(float(v))):
            out[key] = float(v)


def log_training_run(
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: list[Path],
    bundle: Path,
    tags: dict[str, str],
    registered_model: str | None = DEFAULT_REGISTERED_MODEL,
) -> tuple[str, str | None]:
    """Returns (run_id, registered version or None)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    # MLflow writes "View run ... at: URL" to stdout when a run ends; stdout is the CLI's
    # JSON document, so MLflow's chatter goes to stderr.
    with _failures_named(mlflow.get_tracking_uri, bundle), redirect_stdout(sys.stderr):
        import mlflow.onnx
        import onnx

        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=tags.get("router_version")) as run:
            mlflow.set_tags(tags)
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
            mlflow.log_metrics(clean)
            for a in artifacts:
                mlflow.log_artifact(str(a), artifact_path="plots")
            mlflow.log_artifacts(str(bundle), artifact_path="bundle")
            model = onnx.load(str(bundle / "model.onnx"))
            info = mlflow.onnx.log_model(
                model,
                name="onnx_model",
                registered_model_name=registered_model,
            )
            version = None
            if registered_model:
                version = str(info.registered_model_version)
                log.info("registered %s version %s", registered_model, version)
                # So `compare` and the registry UI can name a version without opening its run.
                client = mlflow.MlflowClient()
                for k in ("router_version", "featurizer", "data", LADDER_TAG):
                    if tags.get(k):
                        client.set_model_version_tag(registered_model, version, k, tags[k])
                mlflow.set_tags(
                    {"registered_model": registered_model, "registered_version": version}
                )
            log.info("MLflow run %s at %s", run.info.run_id, mlflow.get_tracking_uri())
            return run.info.run_id, version


@contextmanager
def _failures_named(tracking_uri: Callable[[], str], bundle: Path) -> Iterator[None]:
    """Any store, network or config failure as one TrackingError saying where and what."""
    try:
        yield
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrackingError(
            f"MLflow logging to {tracking_uri()} failed: {first} "
            f"(the bundle is written at {bundle}; set MLFLOW_TRACKING_URI to a working "
            "store, e.g. sqlite:///mlflow.db, or pass --no-mlflow)"
        ) from e


def metrics_for_mlflow(sections: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix, d in sections.items():
        _flat(prefix + "." if prefix else "", d, out)
    return out
