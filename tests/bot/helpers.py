"""Building blocks of the bot tests: a served bundle, real-shaped signed deliveries, a server thread."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from typing_extensions import TypeVar

from bot.signature import sign
from tests.conftest import REPO_ROOT
from tests.conftest import wait_for as wait_for  # the bot tests' import of it
from training.bundle import Bundle
from training.registry import Registry

PAYLOADS = REPO_ROOT.parent / "shared" / "github-payloads"
SECRET = "test-webhook-secret"
API_TOKEN = "test-api-token"


def example(event: str, name: str) -> dict[str, Any]:
    """A real delivery from ../shared/github-payloads, to be adapted by the test."""
    path = PAYLOADS / event / f"{name}.payload.json"
    if not path.is_file():
        raise AssertionError(
            f"the shared webhook payloads are missing: {path} (see ../shared/github-payloads)"
        )
    return json.loads(path.read_text())


def repository_json(full_name: str, repo_id: int, node_id: str) -> dict[str, Any]:
    repository = example("issues", "opened")["repository"]
    owner, name = full_name.split("/")
    repository.update(
        id=repo_id,
        node_id=node_id,
        name=name,
        full_name=full_name,
        default_branch="main",
        url=f"https://api.github.com/repos/{full_name}",
    )
    repository["owner"]["login"] = owner
    return repository


def issue_delivery(
    action: str,
    issue: dict[str, Any],
    repository: dict[str, Any],
    *,
    installation_id: int,
    sender_type: str = "User",
    sender_login: str = "maintainer",
    label: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``issues`` delivery carrying the fake GitHub's issue object."""
    payload = example("issues", "labeled" if action in {"labeled", "unlabeled"} else "opened")
    payload["action"] = action
    payload["issue"] = copy.deepcopy(issue)
    payload["repository"] = repository
    payload["installation"] = {"id": installation_id, "node_id": "MDIz"}
    payload["sender"].update(login=sender_login, type=sender_type)
    if label is not None:
        payload["label"] = copy.deepcopy(label)
    else:
        payload.pop("label", None)
    return payload


class Deliverer:
    """Sends signed deliveries to the bot over HTTP, as GitHub does."""

    def __init__(self, base_url: str, secret: str = SECRET) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.secret = secret

    def send(self, event: str, payload: dict[str, Any], *, delivery_id: str | None = None) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.post(event, body, delivery_id=delivery_id or str(uuid.uuid4()))

    def post(
        self,
        event: str | None,
        body: bytes,
        *,
        delivery_id: str | None,
        sign_it: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test"}
        if event is not None:
            sent["X-GitHub-Event"] = event
        if delivery_id is not None:
            sent["X-GitHub-Delivery"] = delivery_id
        if sign_it:
            sent["X-Hub-Signature-256"] = sign(self.secret, body)
        sent.update(headers or {})
        return self.client.post("/webhook", content=body, headers=sent)

    def close(self) -> None:
        self.client.close()


class ServerThread:
    """The app under uvicorn on 127.0.0.1, in this process (lifespan included)."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bot server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def slice_as(folder: Path, repo: str, rows: int = 80) -> Path:
    """The first ``rows`` real scikit-learn issues of ../shared/data, as ``repo``'s (a JSONL file)."""
    source = REPO_ROOT.parent / "shared" / "data" / "sklearn_surya" / "issues.jsonl"
    lines = source.read_text().splitlines()[:rows]
    path = folder / f"slice-{rows}.jsonl"
    path.write_text("".join(json.dumps(json.loads(line) | {"repo": repo}) + "\n" for line in lines))
    return path


def build_bundle(
    registry_root: Path, repo: str, labels: dict[str, dict[str, Any]], max_length: int = 64
) -> str:
    """A real bundle (the packaged encoder, an untrained head, exported to ONNX) whose decisions
    the test controls through thresholds: threshold 0 always applies, above 1 never does."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.bundle import write_manifest
    from training.config import PACKAGED_MODEL, resolve_base_model
    from training.export import export_onnx
    from training.registry import Registry

    torch.manual_seed(0)
    base = resolve_base_model(PACKAGED_MODEL)
    names = list(labels)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(names), problem_type="multi_label_classification"
    )
    registry = Registry(registry_root)
    version, folder = registry.new_version(repo)
    tokenizer.save_pretrained(folder)
    export_onnx(model, tokenizer, folder / "model.onnx")
    (folder / "labels.json").write_text(json.dumps(names))
    thresholds = {
        "thresholds": {n: spec["threshold"] for n, spec in labels.items()},
        "reliable": {n: spec.get("reliable", True) for n, spec in labels.items()},
        "validation_f1": {n: 0.5 for n in names},
        "validation_support": {n: 5 for n in names},
        "exclusive_groups": [],
    }
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    (folder / "label_ids.json").write_text(
        json.dumps({n: spec["node_id"] for n, spec in labels.items() if spec.get("node_id")})
    )
    write_manifest(folder, {"version": version, "repo": repo, "max_length": max_length, "precision": "fp32"})
    registry.promote(repo, version)
    return version


class CountingRegistry(Registry):
    """The real registry, noting every bundle whose model it loads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loads: list[str] = []

    def load(self, repo: str, version: str, **kw: Any) -> Bundle:
        self.loads.append(repo)
        return super().load(repo, version, **kw)


RegistryKind = TypeVar("RegistryKind", bound=Registry, default=CountingRegistry)


def registry_copy(
    source: Path,
    root: Path,
    repo: str,
    *others: str,
    kind: type[RegistryKind] = CountingRegistry,  # type: ignore[assignment]
) -> RegistryKind:
    """A copy of the registry at ``source`` in which each of ``others`` has ``repo``'s bundles."""
    shutil.copytree(source, root, symlinks=True)
    for other in others:
        shutil.copytree(root / repo.replace("/", "__"), root / other.replace("/", "__"), symlinks=True)
    return kind(root)
