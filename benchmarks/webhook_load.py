"""Webhook load: N signed ``issues.opened`` deliveries at a steady rate against ``python -m bot``.

The bot runs as its own process, serving the bundle in service from ``--registry`` for
``--repo``; GitHub is the tests' fake server on 127.0.0.1. Reports deliveries accepted per
second, the time to answer a delivery, the time from sending a delivery to the labels reaching
the fake GitHub (p50/p99), the bot's own part of it (delivery stored -> labels received by the
fake GitHub, and -> labels written, the GitHub reply included, from its store), errors (the
answers' statuses, and the bot's warnings and errors from its log), lost or doubled labels, the
CPU time per delivery of the bot and of this process, and the CPU steal time meanwhile (on a
shared VM, other guests taking the cores explain a slow run). The first ``--warmup``
deliveries are sent the same way but left out of the timings (first connections, first
queries). Prints a table and writes JSON.

    python -m benchmarks.webhook_load --registry var/models --repo scikit-learn/scikit-learn \\
        --deliveries 400 --rate 20 --concurrency 8

With ``--store postgres`` the bot's store is a PostgreSQL server started for the run (from the
machine's packages, every commit flushed to disk as in production) instead of a SQLite file.

With ``--during-refresh CONFIG`` the fake GitHub also serves the repository's real issues and the
load starts once a refresh (``POST /admin/refresh``, training with CONFIG, on a copy of the
registry) has fetched the issues and goes on to train: webhook latency while the bot retrains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bot.signature import sign
from tests.fakegithub import FakeGitHub
from tests.fakegithub.app_keys import generate_app_keys
from tests.fakegithub.ports import free_port
from tests.fakegithub.seed import seed_from_jsonl
from tests.pg_server import PostgresServer
from training.machine import cpu_info, cpu_steal_seconds, describe
from training.registry import Registry
from training.store.db import SQLITE_SYNCHRONOUS
from training.store.models import FetchCursor, Prediction, Repository, WebhookJob

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECRET = "load-test-secret"
TOKEN = "load-test-token"
APP_ID, INSTALLATION = 1, 7


def _issues(path: Path, n: int) -> list[dict]:
    rows = []
    with path.open() as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("body"):
                rows.append(row)
            if len(rows) == n:
                break
    return rows


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


async def _send_all(
    url: str, bodies: list[tuple[str, bytes]], rate: float, concurrency: int
) -> tuple[dict, list]:
    """Send at ``rate`` per second, at most ``concurrency`` in flight; returns send times and answers."""
    sent_at: dict[str, float] = {}
    answers: list[tuple[str, int, float]] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(delivery_id: str, body: bytes) -> None:
            async with gate:
                headers = {
                    "X-GitHub-Event": "issues",
                    "X-GitHub-Delivery": delivery_id,
                    "X-Hub-Signature-256": sign(SECRET, body),
                    "Content-Type": "application/json",
                }
                sent_at[delivery_id] = time.time()
                try:
                    response = await client.post("/webhook", content=body, headers=headers)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                answers.append((delivery_id, status, (time.time() - sent_at[delivery_id]) * 1000))

        tasks = []
        started = time.perf_counter()
        for i, (delivery_id, body) in enumerate(bodies):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(delivery_id, body)))
        await asyncio.gather(*tasks)
    return sent_at, answers


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--repo", default="scikit-learn/scikit-learn")
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--rate", type=float, default=20.0, help="deliveries per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="deliveries sent first at the same rate and left out of the timings (checked for "
        "lost and doubled labels like the rest): the load generator's and the bot's first-use costs",
    )
    parser.add_argument("--workers", type=int, default=2, help="the bot's worker threads")
    parser.add_argument(
        "--onnx-threads", type=int, default=2, help="onnxruntime threads per prediction (one at a time)"
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=SQLITE_SYNCHRONOUS,
        default="full",
        help="the bot's SQLite store: flush every commit to disk (full) or only at checkpoints (normal)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the bot's store: a SQLite file, or a PostgreSQL server started for the run on "
        "127.0.0.1 from the machine's packages (as `make test` installs them), flushing every "
        "commit to disk as production does",
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "sklearn_surya" / "issues.jsonl"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "webhook_load.json")
    parser.add_argument(
        "--during-refresh",
        type=Path,
        metavar="CONFIG",
        help="send the load while a refresh with this training config runs",
    )
    args = parser.parse_args()
    registry = Registry(args.registry.resolve())
    bundle = registry.load_current(args.repo)
    if bundle is None:
        parser.error(
            f"no bundle in service for {args.repo} under {args.registry}: "
            "run python -m training.refresh first"
        )
    labels = list(bundle.labels)
    precision = str(bundle.info.get("precision"))
    del bundle

    private, public = generate_app_keys()
    texts = _issues(args.data, args.warmup + args.deliveries)
    with (
        FakeGitHub(app_id=APP_ID, app_public_key=public) as fake,
        tempfile.TemporaryDirectory() as tmp,
        _store(args.store, Path(tmp), args.sqlite_synchronous) as (database_url, store_url, server),
    ):
        repo = fake.add_repo(args.repo, installation_id=INSTALLATION)
        for name in labels:
            fake.label_json(repo, name)
        first_number, registry_root = 1, registry.root
        if args.during_refresh:
            seed_from_jsonl(fake, args.data, args.repo)  # what the refresh fetches
            first_number = max(repo.issues, default=0) + 1
            registry_root = Path(tmp) / "registry"
            shutil.copytree(registry.root, registry_root, symlinks=True)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ISSUE_LABELER_")},
            "ISSUE_LABELER_DATABASE_URL": database_url,
            "ISSUE_LABELER_GITHUB_API_URL": fake.base_url,
            "ISSUE_LABELER_GITHUB_APP_ID": str(APP_ID),
            "ISSUE_LABELER_GITHUB_PRIVATE_KEY": private,
            "ISSUE_LABELER_WEBHOOK_SECRET": SECRET,
            "ISSUE_LABELER_REGISTRY_DIR": str(registry_root),
            "ISSUE_LABELER_API_TOKEN": TOKEN,
            "ISSUE_LABELER_REFRESH_CHECK_MINUTES": "0",
            "ISSUE_LABELER_WORKER_THREADS": str(args.workers),
            "ISSUE_LABELER_ONNX_THREADS": str(args.onnx_threads),
            "ISSUE_LABELER_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
        if args.during_refresh:
            env["ISSUE_LABELER_REFRESH_CONFIG"] = str(args.during_refresh.resolve())
        log_path = Path(tmp) / "bot.log"
        bot = subprocess.Popen(
            [sys.executable, "-m", "bot", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its refresh children are stopped with it
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(lambda: _get(url + "/healthz") == 200, bot, log_path)
            install = {
                "action": "created",
                "installation": {"id": INSTALLATION, "account": {"login": args.repo.split("/")[0]}},
                "repositories": [{"id": repo.id, "node_id": repo.node_id, "full_name": args.repo}],
            }
            _post(url, "installation", install)
            _wait(lambda: args.repo in httpx.get(url + "/readyz").json()["bundles"], bot, log_path)

            bodies = []
            repository = {
                "id": repo.id,
                "node_id": repo.node_id,
                "full_name": args.repo,
                "default_branch": "main",
            }
            for number, row in enumerate(texts, start=first_number):
                issue = fake.add_issue(
                    repo,
                    number=number,
                    title=row["title"],
                    body=row["body"],
                    labels=[],
                    created_at=datetime.now(UTC),
                )
                payload = {
                    "action": "opened",
                    "issue": issue,
                    "repository": repository,
                    "installation": {"id": INSTALLATION},
                    "sender": {"login": "someone", "type": "User"},
                }
                bodies.append((f"load-{number}-{uuid.uuid4().hex[:8]}", json.dumps(payload).encode()))
            number_of = {delivery_id: n for n, (delivery_id, _) in enumerate(bodies, start=first_number)}
            warmup, bodies = bodies[: args.warmup], bodies[args.warmup :]
            refresh_state, refresh_fetch_seconds = None, None
            if args.during_refresh:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                httpx.post(
                    url + "/admin/refresh", json={"repository": args.repo}, headers=auth
                ).raise_for_status()
                _wait(lambda: _refresh_status(url, args.repo) == "running", bot, log_path, timeout=120)
                # the load meets the refresh's training, not its fetch
                fetch_started = time.time()
                _wait(lambda: _fetch_completed(store_url, args.repo), bot, log_path, timeout=300)
                refresh_fetch_seconds = round(time.time() - fetch_started, 1)
            if warmup:
                asyncio.run(_send_all(url, warmup, args.rate, args.concurrency))
                _wait(lambda: _finished(url) >= len(warmup), bot, log_path, timeout=120)
            bot_cpu, own_cpu = _process_cpu_seconds(bot.pid), time.process_time()
            server_cpu = _server_cpu_seconds(server)
            steal = cpu_steal_seconds()
            started = time.time()
            sent_at, answers = asyncio.run(_send_all(url, bodies, args.rate, args.concurrency))
            send_seconds = time.time() - started
            deadline = time.time() + 120
            while time.time() < deadline and _finished(url) < len(warmup) + len(bodies):
                time.sleep(0.2)
            unfinished = len(warmup) + len(bodies) - int(_finished(url))
            bot_cpu_end = _process_cpu_seconds(bot.pid)
            server_cpu_end = _server_cpu_seconds(server)
            steal_end, load_seconds = cpu_steal_seconds(), time.time() - started
            steal_pct = (
                round(100 * (steal_end - steal) / (load_seconds * (os.cpu_count() or 1)), 1)
                if steal is not None and steal_end is not None
                else None
            )
            bot_cpu_ms = (
                round((bot_cpu_end - bot_cpu) * 1000 / len(bodies), 1)
                if bot_cpu is not None and bot_cpu_end is not None and bodies
                else None
            )
            server_cpu_ms = (
                round((server_cpu_end - server_cpu) * 1000 / len(bodies), 1)
                if server_cpu is not None and server_cpu_end is not None and bodies
                else None
            )
            own_cpu_ms = round((time.process_time() - own_cpu) * 1000 / max(len(bodies), 1), 1)
            if args.during_refresh:
                refresh_state = _refresh_status(url, args.repo)
        finally:
            os.killpg(bot.pid, signal.SIGTERM)
            bot.wait(30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bot.pid, signal.SIGKILL)  # a refresh child still training

        stamps = _bot_stamps(store_url)
        in_bot_ms = [(stamps[d][1] - stamps[d][0]) * 1000 for d in sent_at if d in stamps]

        posts: dict[int, list[float]] = {}
        for request in fake.requests_to(rf"/repos/{args.repo}/issues/\d+/labels", "POST"):
            posts.setdefault(int(request.path.split("/")[-2]), []).append(request.received_at)
        measured = {number_of[d] for d in sent_at}
        labeled_ms = [(posts[number_of[d]][0] - sent_at[d]) * 1000 for d in sent_at if number_of[d] in posts]
        bot_to_labels_ms = [
            (posts[number_of[d]][0] - stamps[d][0]) * 1000
            for d in sent_at
            if d in stamps and number_of[d] in posts
        ]
        answer_ms = [ms for _, status, ms in answers]
        errors = sum(1 for _, status, _ in answers if status != 202)
        # 0 = no answer (the load generator's connection failed or timed out)
        statuses = dict(sorted(Counter(str(status) for _, status, _ in answers).items()))
        # what the bot said about whatever went wrong, kept before its folder is removed
        bot_problems = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if " ERROR " in line or " WARNING " in line or "Traceback" in line
        ][:50]
        doubled = sum(1 for times in posts.values() if len(times) > 1)
        predicted_nothing = len(bodies) - len(measured & posts.keys())
        result = {
            "repo": args.repo,
            "bundle_precision": precision,
            "deliveries": len(bodies),
            "warmup_deliveries": len(warmup),
            "target_rate_per_s": args.rate,
            "concurrency": args.concurrency,
            "bot_workers": args.workers,
            "onnx_threads": args.onnx_threads,
            "store": args.store,
            "sqlite_synchronous": args.sqlite_synchronous if args.store == "sqlite" else None,
            "accepted_per_s": round(sum(1 for _, s, _ in answers if s == 202) / send_seconds, 1),
            "answer_p50_ms": _percentile(answer_ms, 50),
            "answer_p99_ms": _percentile(answer_ms, 99),
            "delivery_to_labels_p50_ms": _percentile(labeled_ms, 50),
            "delivery_to_labels_p99_ms": _percentile(labeled_ms, 99),
            "in_bot_p50_ms": _percentile(in_bot_ms, 50),
            "in_bot_p99_ms": _percentile(in_bot_ms, 99),
            "stored_to_labels_received_p50_ms": _percentile(bot_to_labels_ms, 50),
            "stored_to_labels_received_p99_ms": _percentile(bot_to_labels_ms, 99),
            "errors": errors,
            "answer_statuses": statuses,
            "issues_labeled": len(measured & posts.keys()),
            "issues_with_no_label_decided": predicted_nothing,
            "doubled_label_writes": doubled,
            "jobs_not_finished": unfinished,
            # CPU per delivery: what a rate costs of the cores (2 cores = 2,000 ms per second)
            "bot_cpu_ms_per_delivery": bot_cpu_ms,
            "store_server_cpu_ms_per_delivery": server_cpu_ms,  # PostgreSQL's processes; None for SQLite
            "load_and_fake_github_cpu_ms_per_delivery": own_cpu_ms,
            # the share of the cores another VM on the same host took meanwhile (noisy neighbours)
            "cpu_steal_percent": steal_pct,
            "mean_answer_ms": round(statistics.fmean(answer_ms), 1) if answer_ms else None,
            "during_refresh": str(args.during_refresh) if args.during_refresh else None,
            "refresh_fetch_seconds": refresh_fetch_seconds,
            "refresh_still_running_after_load": refresh_state == "running" if args.during_refresh else None,
            "bot_log_problems": bot_problems,
            "cpu": cpu_info(),
        }
    print(
        f"{result['deliveries']} deliveries at {args.rate}/s, concurrency {args.concurrency}, "
        f"{args.workers} workers x {args.onnx_threads} onnxruntime threads, bundle {precision}"
    )
    for key, value in result.items():
        if key not in ("cpu", "bot_log_problems"):
            print(f"  {key:<32} {value}")
    for line in bot_problems:
        print(f"  bot: {line}")
    print(describe(result["cpu"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")
    return 0


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, all its threads (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _store(kind: str, folder: Path, synchronous: str) -> Iterator[tuple[str, str, PostgresServer | None]]:
    """The bot's store: its URL, the URL this process reads the results from, and the
    PostgreSQL server (None for SQLite, which runs inside the bot)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/bot.db?synchronous={synchronous}", f"sqlite:///{folder}/bot.db", None
        return
    server = PostgresServer(durable=True)
    url = server.start()
    try:
        yield url, url, server
    finally:
        server.stop()


def _server_cpu_seconds(server: PostgresServer | None) -> float | None:
    """CPU time of the PostgreSQL server's processes (the postmaster and its children: the
    bot's pooled connections live through the load), on the same cores as the bot (Linux)."""
    if server is None:
        return None
    try:
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid = int(stat.parent.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _bot_stamps(store_url: str) -> dict[str, tuple[float, float]]:
    """Per labeled issue, the bot's own stamps (epoch seconds): delivery stored, and labels
    written (the GitHub call answered and recorded). From the first to the fake GitHub receiving
    the labels is our own time as the target means it: no load generator, no GitHub reply."""
    engine = create_engine(store_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(WebhookJob.delivery_id, WebhookJob.received_at, Prediction.applied_at)
                .join(Prediction, Prediction.delivery_id == WebhookJob.delivery_id)
                .where(Prediction.applied_at.is_not(None))
            ).all()
    finally:
        engine.dispose()
    return {
        delivery: (_epoch(received), _epoch(applied))
        for delivery, received, applied in rows
        if applied is not None  # the query's condition
    }


def _epoch(moment: datetime) -> float:
    """SQLite gives the stored UTC stamps back without their zone."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _fetch_completed(store_url: str, repo: str) -> bool:
    """Whether the refresh has stored the repository's issues (its next stages train)."""
    engine = create_engine(store_url)
    try:
        with Session(engine) as session:
            completed = session.scalar(
                select(FetchCursor.last_completed_at)
                .join(Repository, Repository.id == FetchCursor.repository_id)
                .where(Repository.full_name == repo)
            )
    finally:
        engine.dispose()
    return completed is not None


def _refresh_status(url: str, repo: str) -> str | None:
    status = httpx.get(url + "/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    runs = status["repositories"].get(repo, {}).get("refreshes") or []
    return runs[0]["status"] if runs else None


def _finished(url: str) -> float:
    """Issue jobs that have ended (done, ignored or failed), from the bot's metrics."""
    text = httpx.get(url + "/metrics").text
    finished = 0.0
    for line in text.splitlines():
        if line.startswith('issue_labeler_jobs_total{event="issues"'):
            status = line.split('status="')[1].split('"')[0]
            if status in {"done", "failed", "ignored"}:
                finished += float(line.rsplit(" ", 1)[1])
    return finished


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


def _post(url: str, event: str, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": uuid.uuid4().hex,
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    response = httpx.post(url + "/webhook", content=body, headers=headers)
    response.raise_for_status()


def _wait(
    condition: Callable[[], object], process: subprocess.Popen[bytes], log: Path, timeout: float = 90
) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"the bot exited:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for the bot:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


if __name__ == "__main__":
    raise SystemExit(main())
