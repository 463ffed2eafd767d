"""Memory of the served models: the bot's resident memory with N repositories' bundles in service,
every model loaded or at most ``ISSUE_LABELER_MAX_LOADED_BUNDLES`` of them, while issues
alternate between the repositories; and what an issue whose model was unloaded waits for it.

Each bound runs in a fresh process over N copies of one bundle. Prints a table and writes JSON.

    python -m benchmarks.served_memory --bundle var/models/scikit-learn__scikit-learn/current
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.served_models import ServedModels
from training.bundle import Bundle
from training.dataset import issue_text
from training.machine import cpu_info, describe
from training.quickstart import DEFAULT_DATA_DIR
from training.registry import Registry

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def _issue_texts(data_dir: Path, count: int) -> list[str]:
    issues = data_dir / "sklearn_surya" / "issues.jsonl"
    if not issues.is_file():
        raise SystemExit(f"the shared issue data is missing: {issues}")
    texts = []
    for line in issues.read_text().splitlines():
        row = json.loads(line)
        if row.get("body"):
            texts.append(issue_text(row["title"], row["body"]))
        if len(texts) == count:
            return texts
    return texts


def _serve(
    root: str, repos: list[str], bound: int, rounds: int, threads: int, data_dir: Path
) -> dict[str, Any]:
    """In a fresh process: load, then label ``rounds`` issues per repository in turn."""
    texts = _issue_texts(data_dir, rounds * len(repos))
    before = _rss_mb()
    models = ServedModels(Registry(Path(root)), threads=threads, check_seconds=3600, max_loaded=bound)
    models.load(repos)
    loaded_at_start = _rss_mb()
    rss, loading_lookups = [], []
    for n in range(rounds):
        for i, repo in enumerate(repos):
            was_loaded = repo in models.loaded()
            started = time.perf_counter()
            bundle = models.get(repo)
            took = time.perf_counter() - started
            if not was_loaded:
                loading_lookups.append(took * 1000)
            assert bundle is not None
            bundle.probabilities([texts[n * len(repos) + i]])
        rss.append(round(_rss_mb()))
    return {
        "bound": bound,
        "rss_before_mb": round(before),
        "rss_loaded_at_start_mb": round(loaded_at_start),
        "rss_after_each_round_mb": rss,
        "models_loaded_at_end": len(models.loaded()),
        "lookups_that_loaded": len(loading_lookups),
        "lookup_that_loaded_ms": {
            "median": round(statistics.median(loading_lookups), 1) if loading_lookups else None,
            "max": round(max(loading_lookups), 1) if loading_lookups else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", type=Path, required=True, help="a bundle folder (e.g. a repository's current)"
    )
    parser.add_argument(
        "--copies", type=int, default=4, help="repositories served, each a copy of the bundle"
    )
    parser.add_argument("--bounds", default="0,1,2", help="values of max_loaded_bundles (0: none)")
    parser.add_argument("--rounds", type=int, default=10, help="issues per repository, in turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="real issue texts to score")
    parser.add_argument("--out", type=Path, default=RESULTS / "served_memory.json")
    args = parser.parse_args()
    folder = args.bundle.resolve()
    bundle = Bundle(folder)  # refuses a corrupted bundle before anything is measured
    repos = [f"memory-benchmark/repo{i}" for i in range(args.copies)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp))
        for repo in repos:
            target = registry.repo_dir(repo)
            target.mkdir(parents=True)
            shutil.copytree(folder, target / bundle.version)
            os.symlink(bundle.version, target / "current")
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(1, maxtasksperchild=1) as pool:
            for bound in (int(b) for b in args.bounds.split(",")):
                rows.append(pool.apply(_serve, (tmp, repos, bound, args.rounds, args.threads, args.data_dir)))
    info = cpu_info()
    print(describe(info))
    print(f"{args.copies} repositories, each a copy of {folder.name} ({bundle.info.get('precision')})")
    print(
        "| bound | RSS before loading MB | loaded at start | after each round, min-max "
        "| lookups that loaded | their median / max ms |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        after = row["rss_after_each_round_mb"]
        took = row["lookup_that_loaded_ms"]
        print(
            f"| {row['bound'] or 'none'} | {row['rss_before_mb']} | {row['rss_loaded_at_start_mb']} | "
            f"{min(after)}-{max(after)} | {row['lookups_that_loaded']} | {took['median']} / {took['max']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "bundle": str(folder),
                "precision": bundle.info.get("precision"),
                "copies": args.copies,
                "rounds": args.rounds,
                "threads": args.threads,
                "machine": info,
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
