"""Featurize-and-label throughput: the training table in-process vs on Ray Data (local).

    python benchmarks/table_throughput.py --records 40000 --sources 8 [--bundle B] [--cpus 2]

Writes `--records` synthetic outcome-log records (benchmarks/make_logs.py) as `--sources`
gzipped files, then builds the table from them in this process and on a local Ray with
`--cpus` CPUs (`--cpus - 1` featurizer actors, so reading and the shuffle keep a CPU), and
prints records/s of each, side by side. Without --bundle, a featurizer-only bundle is
assembled from this machine's static assets (what `train` would put in one). Ray's time
includes its per-job overhead (scheduling, the sort-based dedupe and ordering shuffles),
not its start-up (`ray.init`, reported apart).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

TIERS = REPO / "data" / "ladders" / "mmlu_pro.toml"


def featurizer_bundle(dst: Path) -> Path:
    import numpy as np

    from router import bundle as layout
    from router.featurizer import FeaturizerConfig
    from training import assets

    static = assets.static_assets()
    dst.mkdir(parents=True, exist_ok=True)
    (dst / layout.FEATURIZER_FILE).write_text(FeaturizerConfig(kind="fast").to_json() + "\n")
    shutil.copy(static.tokenizer_json, dst / layout.STATIC_TOKENIZER)
    np.save(dst / layout.STATIC_TABLE, static.table.astype(np.float32), allow_pickle=False)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--cpus", type=int, default=2)
    a = ap.parse_args()

    from make_logs import write_logs

    from router.ladder import Ladder
    from training.scale_table import TableSpec, build_table, build_table_ray

    work = Path(tempfile.mkdtemp(prefix="tier-router-table-bench-"))
    try:
        bundle = a.bundle or featurizer_bundle(work / "bundle")
        ladder = Ladder.load(TIERS)
        per = a.records // a.sources
        logs = []
        for i in range(a.sources):
            p = work / f"logs-{i}.jsonl.gz"
            write_logs(p, per, ladder, seed=i + 1, first_id=i * per)
            logs.append(str(p))
        spec = TableSpec.of(TIERS, bundle)
        n = per * a.sources

        t = time.perf_counter()
        rows = build_table(logs, spec, work / "local.parquet")
        local_s = time.perf_counter() - t

        import ray

        t = time.perf_counter()
        ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        try:
            t = time.perf_counter()
            ray_rows = build_table_ray(
                logs, spec, str(work / "ray"), featurizers=max(1, a.cpus - 1)
            )
            ray_s = time.perf_counter() - t
        finally:
            ray.shutdown()
        print(json.dumps({
            "records": n, "sources": a.sources, "rows": rows, "ray_rows": ray_rows,
            "in_process": {"seconds": round(local_s, 1), "records_per_s": round(n / local_s)},
            "ray_local": {"cpus": a.cpus, "seconds": round(ray_s, 1),
                          "records_per_s": round(n / ray_s), "ray_init_s": round(init_s, 1)},
        }))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
