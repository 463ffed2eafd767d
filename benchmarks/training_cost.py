"""Training cost: wall time and peak memory of a full refresh on scikit-learn's issues.

Runs ``python -m training.refresh`` as a child process on a fresh store and registry (the
sample settings: form and workflow labels excluded), then reads its stage timings from the
bundle's metrics.json. Prints a table and writes JSON.

    python benchmarks/training_cost.py [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.machine import describe
from training.quickstart import DEFAULT_DATA_DIR, SAMPLE_TEMPLATE_LABELS

RESULTS = Path(__file__).resolve().parent / "results"
REPO = "scikit-learn/scikit-learn"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="training config; default: the defaults")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "training_cost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {
            "ISSUE_LABELER_DATABASE_URL": f"sqlite:///{tmp}/store.db",
            "ISSUE_LABELER_TEMPLATE_LABELS": json.dumps(SAMPLE_TEMPLATE_LABELS),
            "HF_HUB_OFFLINE": "1",
        }
        command = [
            sys.executable,
            "-m",
            "training.refresh",
            "--repo",
            REPO,
            "--from-jsonl",
            str(args.data_dir / "sklearn_surya" / "issues.jsonl"),
            "--registry",
            f"{tmp}/models",
        ]
        if args.config:
            command += ["--config", str(args.config)]
        started = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if result.returncode != 0:
            print(result.stderr[-4000:])
            return result.returncode
        metrics = json.loads(next(Path(tmp, "models").glob("*/*/metrics.json")).read_text())
    row = {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb),
        "stages_s": metrics["timings_s"],
        "counts": metrics["counts"],
        "test_micro_f1": metrics["test"]["micro_f1"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "cpu": metrics["cpu"],  # as the refresh recorded it next to its timings
        "training_precision": metrics["training_precision"],
    }
    print(
        f"full refresh of {REPO}: {row['wall_s'] / 60:.1f} min wall, peak RSS {row['peak_rss_mb']} MB, "
        f"trained in {row['training_precision']}"
    )
    for stage, seconds in row["stages_s"].items():
        print(f"  {stage:<12} {seconds:>8.1f} s")
    print(f"test micro/macro F1 {row['test_micro_f1']:.3f} / {row['test_macro_f1']:.3f}")
    print(describe(row["cpu"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
