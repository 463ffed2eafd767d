"""A small GitHub REST server on 127.0.0.1 for the tests: real HTTP, real-shaped payloads.

It keeps repositories, issues, labels, file contents and App installations in memory, paginates
with ``Link`` headers, counts a primary rate limit with ``X-RateLimit-*`` headers, and can be told
to answer faults (secondary rate limits, 5xx, slow responses) for matching requests. As the App's
webhook it signs and POSTs deliveries to ``hook_url``, keeps a record of each attempt, lists them
and redelivers one on request, as GitHub's ``/app/hook/deliveries`` endpoints do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit
from uuid import uuid4

import jwt
import requests

Json = dict[str, Any]
ORG_ID = 9000  # the organization of an organization webhook
CONTENT_LIMIT = 1024 * 1024  # the contents API returns a file's text up to 1 MB


@dataclass
class Fault:
    """An answer to give instead of the real one, to requests whose path matches ``path``."""

    path: str
    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    body: Json | None = None
    times: int = 1
    delay: float = 0.0
    skip: int = 0
    method: str = "GET"
    query: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        if method != self.method or not re.fullmatch(self.path, path):
            return False
        return self.query is None or re.search(self.query, query) is not None


def secondary_rate_limit(path: str, retry_after: int = 1, **kw: Any) -> Fault:
    """GitHub's answer to too many requests at once: 403 with Retry-After."""
    return Fault(
        path=path,
        status=403,
        headers={"Retry-After": str(retry_after)},
        body={
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        },
        **kw,
    )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    received_at: float = field(default_factory=time.time)


@dataclass
class FakeRepo:
    full_name: str
    id: int
    node_id: str
    installation_id: int | None = None
    issues: dict[int, Json] = field(default_factory=dict)
    labels: dict[str, Json] = field(default_factory=dict)
    contents: dict[str, str] = field(default_factory=dict)


def _object_or_empty(data: bytes) -> Json:
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    def __init__(self, *, app_id: int | None = None, app_public_key: str | None = None) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.applied: list[tuple[str, int, list[str]]] = []  # (repo, issue number, label names)
        self.comments: list[tuple[str, int, str]] = []
        self.tokens: set[str] = {"test-token"}
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.rate_limit = 5000
        self.rate_window = 3600.0
        self._rate_used = 0
        self._rate_reset = time.time() + self.rate_window
        self.hook_url: str | None = None  # where the webhook's deliveries go
        self.hook_secret = ""
        self.hook_id = 500
        self.hook_repo: str | None = None  # None: the App's webhook; OWNER/NAME: that repository's
        self.hook_org: str | None = None  # an organization's webhook instead (a login; token mode)
        self.hook_deliveries: list[tuple[Json, bytes]] = []  # every attempt, oldest first, with its body
        self._lock = threading.RLock()
        self._ids = iter(range(1000, 10**9))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeGitHub:
        fake = self

        class Handler(_Handler):
            github = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- state -------------------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def add_repo(self, full_name: str, *, installation_id: int | None = None) -> FakeRepo:
        repo_id = self.next_id()
        repo = FakeRepo(
            full_name=full_name,
            id=repo_id,
            node_id=f"R_fake{repo_id}",
            installation_id=installation_id,
        )
        self.repos[full_name] = repo
        return repo

    def rename_repo(self, repo: FakeRepo, full_name: str) -> None:
        """Rename (or transfer) a repository; its id stays, as on GitHub, and its items' URLs
        take the new name."""
        old = self.repos.pop(repo.full_name).full_name
        repo.full_name = full_name
        self.repos[full_name] = repo
        for item in [*repo.issues.values(), *repo.labels.values()]:
            for key in ("url", "repository_url", "html_url", "labels_url", "comments_url", "events_url"):
                if isinstance(item.get(key), str):
                    item[key] = (
                        item[key].replace(f"/{old}/", f"/{full_name}/").replace(f"/{old}", f"/{full_name}")
                    )

    def label_json(
        self, repo: FakeRepo, name: str, color: str = "ededed", description: str | None = None
    ) -> Json:
        label = repo.labels.get(name)
        if label is None:
            label_id = self.next_id()
            label = {
                "id": label_id,
                "node_id": f"LA_fake{label_id}",
                "url": f"{self.base_url}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "color": color,
                "default": False,
                "description": description,
            }
            repo.labels[name] = label
        return label

    def rename_label(self, repo: FakeRepo, old: str, new: str) -> None:
        label = repo.labels.pop(old)
        label["name"] = new
        repo.labels[new] = label
        for issue in repo.issues.values():
            for item in issue["labels"]:
                if item["id"] == label["id"]:
                    item["name"] = new

    def add_issue(
        self,
        repo: FakeRepo,
        *,
        number: int,
        title: str,
        body: str | None,
        labels: list[str],
        state: str = "open",
        created_at: datetime,
        updated_at: datetime | None = None,
        is_pull_request: bool = False,
        user: str = "octocat",
        author_association: str = "NONE",
    ) -> Json:
        """An issue shaped like the REST API's, with labels from the repository's catalogue."""
        issue_id = self.next_id()
        base = self.base_url
        html = f"https://github.com/{repo.full_name}/{'pull' if is_pull_request else 'issues'}/{number}"
        issue: Json = {
            "url": f"{base}/repos/{repo.full_name}/issues/{number}",
            "repository_url": f"{base}/repos/{repo.full_name}",
            "labels_url": f"{base}/repos/{repo.full_name}/issues/{number}/labels{{/name}}",
            "comments_url": f"{base}/repos/{repo.full_name}/issues/{number}/comments",
            "html_url": html,
            "id": issue_id,
            "node_id": f"I_fake{issue_id}",
            "number": number,
            "title": title,
            "user": {"login": user, "id": 1, "node_id": "U_fake1", "type": "User", "site_admin": False},
            "labels": [dict(self.label_json(repo, name)) for name in labels],
            "state": state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": 0,
            "created_at": _iso(created_at),
            "updated_at": _iso(updated_at or created_at),
            "closed_at": _iso(updated_at or created_at) if state == "closed" else None,
            "author_association": author_association,
            "active_lock_reason": None,
            "body": body,
            "reactions": {
                "url": f"{base}/repos/{repo.full_name}/issues/{number}/reactions",
                "total_count": 0,
            },
            "timeline_url": f"{base}/repos/{repo.full_name}/issues/{number}/timeline",
            "performed_via_github_app": None,
            "state_reason": None,
        }
        if is_pull_request:
            issue["pull_request"] = {
                "url": f"{base}/repos/{repo.full_name}/pulls/{number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": None,
            }
        repo.issues[number] = issue
        return issue

    def edit_issue(self, repo: FakeRepo, number: int, updated_at: datetime, **changes: Any) -> Json:
        issue = repo.issues[number]
        if "labels" in changes:
            changes["labels"] = [dict(self.label_json(repo, name)) for name in changes["labels"]]
        issue.update(changes)
        issue["updated_at"] = _iso(updated_at)
        return issue

    def deliver(
        self, event: str, payload: Json | None = None, *, body: bytes | None = None, guid: str | None = None
    ) -> Json:
        """Send a delivery to ``hook_url`` as GitHub does and record the attempt; an unreachable
        hook or a non-2xx answer is recorded as a failure (GitHub does not retry it by itself)."""
        data = body if body is not None else json.dumps(payload).encode()
        redelivery = guid is not None
        guid = guid or str(uuid4())
        signature = hmac.new(self.hook_secret.encode(), data, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/fake",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": f"sha256={signature}",
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-Type": self._hook_target()[0],
            "X-GitHub-Hook-Installation-Target-ID": str(self._hook_target()[1]),
        }
        started = time.monotonic()
        try:
            if self.hook_url is None:
                raise requests.ConnectionError("no webhook URL")
            code = requests.post(self.hook_url, data=data, headers=headers, timeout=10).status_code
            status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
        except requests.RequestException:
            code, status = 0, "failed to connect to host"
        parsed = payload if payload is not None else _object_or_empty(data)
        record = {
            "id": self.next_id(),
            "guid": guid,
            "delivered_at": _iso(datetime.now(UTC)),
            "redelivery": redelivery,
            "duration": round(time.monotonic() - started, 3),
            "status": status,
            "status_code": code,
            "event": event,
            "action": parsed.get("action"),
            "installation_id": (parsed.get("installation") or {}).get("id"),
            "repository_id": (parsed.get("repository") or {}).get("id"),
            "throttled_at": None,
            "url": self.hook_url or "",
        }
        with self._lock:
            self.hook_deliveries.append((record, data))
        return record

    def attempts_of(self, guid: str) -> list[Json]:
        with self._lock:
            return [record for record, _ in self.hook_deliveries if record["guid"] == guid]

    def set_rate_limit(self, limit: int, window_s: float) -> None:
        with self._lock:
            self.rate_limit = limit
            self.rate_window = window_s
            self._rate_used = 0
            self._rate_reset = time.time() + window_s

    def requests_to(self, pattern: str, method: str = "GET") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # -- rate limit --------------------------------------------------------------------------
    def _take_rate(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            if time.time() >= self._rate_reset:
                self._rate_used = 0
                self._rate_reset = time.time() + self.rate_window
            allowed = self._rate_used < self.rate_limit
            if allowed:
                self._rate_used += 1
            headers = {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": str(max(self.rate_limit - self._rate_used, 0)),
                "X-RateLimit-Reset": str(int(self._rate_reset) + 1),
                "X-RateLimit-Used": str(self._rate_used),
                "X-RateLimit-Resource": "core",
            }
            return allowed, headers

    def _pick_fault(self, method: str, path: str, query: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, query):
                    fault.hits += 1
                    if fault.hits <= fault.skip:
                        continue
                    if fault.hits > fault.skip + fault.times:
                        continue
                    return fault
        return None

    # -- routing -----------------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any, dict[str, str]]]]]:
        issue = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/issues/(?P<number>\d+)"
        return [
            ("GET", r"/rate_limit", self._get_rate_limit),
            ("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)", self._get_repo),
            ("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/issues", self._list_issues),
            ("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/labels", self._list_labels),
            ("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/contents/(?P<path>.*)", self._get_contents),
            ("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/installation", self._get_installation),
            ("POST", r"/app/installations/(?P<installation>\d+)/access_tokens", self._create_token),
            ("GET", r"/app/installations", self._list_installations),
            ("GET", r"/app/hook/deliveries", self._list_hook_deliveries),
            ("POST", r"/app/hook/deliveries/(?P<delivery>\d+)/attempts", self._redeliver),
            (
                "GET",
                r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/hooks/(?P<hook>\d+)/deliveries",
                self._list_repo_hook_deliveries,
            ),
            (
                "POST",
                r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/hooks/(?P<hook>\d+)/deliveries/(?P<delivery>\d+)/attempts",
                self._redeliver_repo_hook,
            ),
            ("GET", r"/orgs/(?P<org>[^/]+)/hooks/(?P<hook>\d+)/deliveries", self._list_org_hook_deliveries),
            (
                "POST",
                r"/orgs/(?P<org>[^/]+)/hooks/(?P<hook>\d+)/deliveries/(?P<delivery>\d+)/attempts",
                self._redeliver_org_hook,
            ),
            ("GET", issue, self._get_issue),
            ("POST", issue + "/labels", self._add_labels),
            ("DELETE", issue + r"/labels/(?P<label>[^/]+)", self._remove_label),
            ("POST", issue + "/comments", self._add_comment),
        ]

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, Json] | None:
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        app_only = path.startswith("/app/") or path.endswith("/installation")
        if app_only:
            if scheme.lower() != "bearer" or self.app_public_key is None:
                return 401, {"message": "A JSON web token could not be decoded"}
            try:
                claims = jwt.decode(credential, self.app_public_key, algorithms=["RS256"])
            except jwt.PyJWTError as exc:
                return 401, {"message": f"'Issuer' claim or signature invalid: {exc}"}
            if str(claims.get("iss")) != str(self.app_id):
                return 401, {"message": "'Issuer' claim ('iss') must be an Integer"}
            return None
        if scheme.lower() not in {"token", "bearer"} or credential not in self.tokens:
            return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        return None

    def _repo(self, owner: str, name: str) -> FakeRepo | None:
        """As GitHub: OWNER/NAME in any case; the answers spell it as the repository does."""
        wanted = f"{owner}/{name}"
        found = self.repos.get(wanted)
        if found is None:
            found = next((r for key, r in self.repos.items() if key.lower() == wanted.lower()), None)
        return found

    def _get_rate_limit(self, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        _, headers = self._take_rate()
        core = {
            "limit": int(headers["X-RateLimit-Limit"]),
            "remaining": int(headers["X-RateLimit-Remaining"]),
            "reset": int(headers["X-RateLimit-Reset"]),
            "used": int(headers["X-RateLimit-Used"]),
        }
        return 200, {"resources": {"core": core}, "rate": core}, {}

    def _get_repo(
        self, query: dict[str, list[str]], owner: str, name: str
    ) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(owner, name)
        if repo is None:
            return 404, {"message": "Not Found"}, {}
        owner_login = repo.full_name.split("/")[0]
        return (
            200,
            {
                "id": repo.id,
                "node_id": repo.node_id,
                "name": repo.full_name.split("/")[1],
                "full_name": repo.full_name,
                "private": False,
                "owner": {"login": owner_login, "id": 1, "type": "Organization"},
                "html_url": f"https://github.com/{repo.full_name}",
                "url": f"{self.base_url}/repos/{repo.full_name}",
                "has_issues": True,
                "default_branch": "main",
            },
            {},
        )

    def _paginate(
        self, path: str, query: dict[str, list[str]], items: list[Json]
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []
        flat = {key: values[0] for key, values in query.items()}

        def link(target: int, rel: str) -> str:
            return f'<{self.base_url}{path}?{urlencode({**flat, "page": target})}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return 200, chunk, {"Link": ", ".join(links)} if links else {}

    def _list_issues(
        self, query: dict[str, list[str]], owner: str, name: str
    ) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(owner, name)
        if repo is None:
            return 404, {"message": "Not Found"}, {}
        state = query.get("state", ["open"])[0]
        items = [i for i in repo.issues.values() if state == "all" or i["state"] == state]
        if "since" in query:
            since = query["since"][0]
            items = [i for i in items if i["updated_at"] >= since]
        sort = query.get("sort", ["created"])[0]
        key = "updated_at" if sort == "updated" else "created_at"
        reverse = query.get("direction", ["desc"])[0] == "desc"
        items.sort(key=lambda i: (i[key], i["number"]), reverse=reverse)
        return self._paginate(f"/repos/{owner}/{name}/issues", query, items)

    def _list_labels(
        self, query: dict[str, list[str]], owner: str, name: str
    ) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(owner, name)
        if repo is None:
            return 404, {"message": "Not Found"}, {}
        return self._paginate(f"/repos/{owner}/{name}/labels", query, list(repo.labels.values()))

    def _content_entry(self, repo: FakeRepo, path: str, with_content: bool) -> Json:
        text = repo.contents[path]
        entry: Json = {
            "type": "file",
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": f"{abs(hash(text)):040x}"[:40],
            "size": len(text.encode()),
            "url": f"{self.base_url}/repos/{repo.full_name}/contents/{path}?ref=main",
            "html_url": f"https://github.com/{repo.full_name}/blob/main/{path}",
            "download_url": None,
        }
        if with_content and entry["size"] > CONTENT_LIMIT:  # GitHub sends larger files' metadata only
            entry["encoding"] = "none"
            entry["content"] = ""
        elif with_content:
            entry["encoding"] = "base64"
            entry["content"] = base64.encodebytes(text.encode()).decode()
        return entry

    def _get_contents(
        self, query: dict[str, list[str]], owner: str, name: str, path: str
    ) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(owner, name)
        if repo is None:
            return 404, {"message": "Not Found"}, {}
        path = path.strip("/")
        if path in repo.contents:
            return 200, self._content_entry(repo, path, True), {}
        children = sorted(
            p for p in repo.contents if p.startswith(path + "/") and "/" not in p[len(path) + 1 :]
        )
        if children:
            return 200, [self._content_entry(repo, p, False) for p in children], {}
        return (
            404,
            {"message": "Not Found", "documentation_url": "https://docs.github.com/rest/repos/contents"},
            {},
        )

    def _get_installation(
        self, query: dict[str, list[str]], owner: str, name: str
    ) -> tuple[int, Any, dict[str, str]]:
        repo = self._repo(owner, name)
        if repo is None or repo.installation_id is None:
            return 404, {"message": "Not Found"}, {}
        return (
            200,
            {
                "id": repo.installation_id,
                "app_id": self.app_id,
                "account": {"login": owner, "id": 1, "type": "Organization"},
                "access_tokens_url": (
                    f"{self.base_url}/app/installations/{repo.installation_id}/access_tokens"
                ),
                "permissions": {"issues": "write", "metadata": "read", "contents": "read"},
                "events": ["issues", "label"],
            },
            {},
        )

    def _issue(self, owner: str, name: str, number: str) -> tuple[FakeRepo, Json] | None:
        repo = self._repo(owner, name)
        if repo is None or int(number) not in repo.issues:
            return None
        return repo, repo.issues[int(number)]

    def _get_issue(
        self, query: dict[str, list[str]], owner: str, name: str, number: str
    ) -> tuple[int, Any, dict[str, str]]:
        found = self._issue(owner, name, number)
        return (200, found[1], {}) if found else (404, {"message": "Not Found"}, {})

    def _add_labels(
        self, query: dict[str, list[str]], owner: str, name: str, number: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        """Both request shapes GitHub accepts: a list of names, or {"labels": [...]}."""
        found = self._issue(owner, name, number)
        if found is None:
            return 404, {"message": "Not Found"}, {}
        repo, issue = found
        data = json.loads(body or b"null")
        names = data.get("labels") if isinstance(data, dict) else data
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return 422, {"message": "Invalid request.", "errors": ["labels must be a list of names"]}, {}
        with self._lock:
            current = {item["name"] for item in issue["labels"]}
            for label_name in names:
                if label_name not in current:
                    issue["labels"].append(dict(self.label_json(repo, label_name)))
                    current.add(label_name)
            self.applied.append((repo.full_name, int(number), list(names)))
            issue["updated_at"] = _iso(datetime.now(UTC))
        return 200, issue["labels"], {}

    def _remove_label(
        self, query: dict[str, list[str]], owner: str, name: str, number: str, label: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        found = self._issue(owner, name, number)
        if found is None:
            return 404, {"message": "Not Found"}, {}
        issue = found[1]
        label_name = unquote(label)
        if not any(item["name"] == label_name for item in issue["labels"]):
            return 404, {"message": "Label does not exist"}, {}
        issue["labels"] = [item for item in issue["labels"] if item["name"] != label_name]
        issue["updated_at"] = _iso(datetime.now(UTC))
        return 200, issue["labels"], {}

    def _add_comment(
        self, query: dict[str, list[str]], owner: str, name: str, number: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        found = self._issue(owner, name, number)
        if found is None:
            return 404, {"message": "Not Found"}, {}
        repo, issue = found
        text = json.loads(body or b"{}").get("body")
        comment_id = self.next_id()
        comment = {
            "id": comment_id,
            "node_id": f"IC_fake{comment_id}",
            "url": f"{self.base_url}/repos/{repo.full_name}/issues/comments/{comment_id}",
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
            "issue_url": issue["url"],
            "body": text,
            "user": {"login": "issue-labeler[bot]", "id": 2, "type": "Bot"},
            "created_at": _iso(datetime.now(UTC)),
            "updated_at": _iso(datetime.now(UTC)),
            "author_association": "NONE",
        }
        with self._lock:
            self.comments.append((repo.full_name, int(number), text))
        return 201, comment, {}

    def _list_installations(self, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        ids = sorted({r.installation_id for r in self.repos.values() if r.installation_id is not None})
        return (
            200,
            [
                {
                    "id": i,
                    "app_id": self.app_id,
                    "account": {"login": f"account-{i}", "id": i, "type": "Organization"},
                    "access_tokens_url": f"{self.base_url}/app/installations/{i}/access_tokens",
                    "permissions": {"issues": "write", "metadata": "read", "contents": "read"},
                    "events": ["issues", "label", "push"],
                }
                for i in ids
            ],
            {},
        )

    def _hook_target(self) -> tuple[str, int]:
        """The webhook playing: the App's, a repository's or an organization's, and its target id."""
        if self.hook_org is not None:
            return "organization", ORG_ID
        if self.hook_repo is not None:
            return "repository", self.repos[self.hook_repo].id
        return "integration", self.app_id or 0

    def _hook_path(self) -> str:
        if self.hook_org is not None:
            return f"/orgs/{self.hook_org}/hooks/{self.hook_id}"
        if self.hook_repo is not None:
            return f"/repos/{self.hook_repo}/hooks/{self.hook_id}"
        return "/app/hook"

    def _list_hook_deliveries(
        self, query: dict[str, list[str]], path: str = "/app/hook/deliveries"
    ) -> tuple[int, Any, dict[str, str]]:
        """Newest first, paged by a cursor (the last id seen) as GitHub pages this listing."""
        if path != f"{self._hook_path()}/deliveries":
            return 404, {"message": "Not Found"}, {}
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        with self._lock:
            records = [record for record, _ in reversed(self.hook_deliveries)]
        if "status" in query:  # success or failure
            wanted = query["status"][0] == "success"
            records = [r for r in records if (r["status"] == "OK") == wanted]
        if "cursor" in query:
            records = [r for r in records if r["id"] < int(query["cursor"][0])]
        page, rest = records[:per_page], records[per_page:]
        headers = {}
        if rest:
            cursor = urlencode({**{k: v[0] for k, v in query.items()}, "cursor": page[-1]["id"]})
            headers["Link"] = f'<{self.base_url}{path}?{cursor}>; rel="next"'
        return 200, page, headers

    def _list_repo_hook_deliveries(
        self, query: dict[str, list[str]], owner: str, name: str, hook: str
    ) -> tuple[int, Any, dict[str, str]]:
        return self._list_hook_deliveries(query, f"/repos/{owner}/{name}/hooks/{hook}/deliveries")

    def _redeliver_repo_hook(
        self, query: dict[str, list[str]], owner: str, name: str, hook: str, delivery: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        if f"/repos/{owner}/{name}/hooks/{hook}" != self._hook_path():
            return 404, {"message": "Not Found"}, {}
        return self._redeliver(query, delivery)

    def _list_org_hook_deliveries(
        self, query: dict[str, list[str]], org: str, hook: str
    ) -> tuple[int, Any, dict[str, str]]:
        return self._list_hook_deliveries(query, f"/orgs/{org}/hooks/{hook}/deliveries")

    def _redeliver_org_hook(
        self, query: dict[str, list[str]], org: str, hook: str, delivery: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        if f"/orgs/{org}/hooks/{hook}" != self._hook_path():
            return 404, {"message": "Not Found"}, {}
        return self._redeliver(query, delivery)

    def _redeliver(
        self, query: dict[str, list[str]], delivery: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            found = [(r, data) for r, data in self.hook_deliveries if r["id"] == int(delivery)]
        if not found:
            return 404, {"message": "Not Found"}, {}
        record, data = found[0]
        threading.Thread(
            target=self.deliver,
            args=(record["event"],),
            kwargs={"body": data, "guid": record["guid"]},
            daemon=True,
        ).start()
        return 202, {}, {}

    def _create_token(
        self, query: dict[str, list[str]], installation: str, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        if not any(r.installation_id == int(installation) for r in self.repos.values()):
            return 404, {"message": "Not Found"}, {}
        token = f"ghs_fake{self.next_id()}"
        self.tokens.add(token)
        expires = datetime.fromtimestamp(time.time() + 3600, UTC)
        return 201, {"token": token, "expires_at": _iso(expires), "permissions": {"issues": "write"}}, {}


class _Handler(BaseHTTPRequestHandler):
    github: FakeGitHub
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits for
    # the client's delayed ACK (40 ms on Linux) on a kept-alive connection. GitHub does not.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _handle(self) -> None:
        fake = self.github
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(self.command, path, query, headers, body)
        with fake._lock:
            fake.requests.append(record)

        fault = fake._pick_fault(self.command, path, parts.query)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status:
                self._send(record, fault.status, fault.body or {"message": "fault"}, fault.headers)
                return

        denied = fake.authorize(path, headers)
        if denied is not None:
            self._send(record, denied[0], denied[1], {})
            return
        allowed, rate_headers = fake._take_rate()
        if not allowed:
            self._send(
                record,
                403,
                {
                    "message": "API rate limit exceeded for installation ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                },
                rate_headers,
            )
            return
        for method, pattern, handler in fake.routes():
            match = re.fullmatch(pattern, path)
            if method == self.command and match:
                extra_args = {"body": body} if self.command != "GET" else {}
                status, payload, extra = handler(query, **match.groupdict(), **extra_args)
                self._send(record, status, payload, {**rate_headers, **extra})
                return
        self._send(record, 404, {"message": "Not Found"}, rate_headers)

    def _send(self, record: RecordedRequest, status: int, payload: Any, headers: dict[str, str]) -> None:
        record.status = status
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _handle
    do_POST = _handle
    do_PATCH = _handle
    do_PUT = _handle
    do_DELETE = _handle
