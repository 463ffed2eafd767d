"""Issue records as they arrive (GitHub REST objects or JSONL exports), before they are stored."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_REPO_FROM_URL = re.compile(r"/repos/([^/]+/[^/]+?)(?:/|$)|github\.com/([^/]+/[^/]+?)/(?:issues|pull)/")
# GitHub's owner and repository names: letters, digits, '-', '_' and '.'
_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_repository_name(value: str) -> bool:
    """OWNER/NAME as GitHub spells repositories (the registry's folders are named by it), within
    the store's 200 characters (GitHub's own limits are 39 and 100)."""
    return (
        len(value) <= 200
        and bool(_REPO_NAME.fullmatch(value))
        and not any(part in {".", ".."} for part in value.split("/"))
    )


def repository_argument(value: str) -> str:
    """A command line's OWNER/NAME, checked before it names a registry folder or a store row."""
    if not is_repository_name(value):
        raise argparse.ArgumentTypeError(
            f"expected OWNER/NAME (e.g. scikit-learn/scikit-learn), got {value!r}"
        )
    return value


class RecordError(ValueError):
    """A record that cannot be understood; the message says which field is wrong."""


@dataclass(frozen=True)
class LabelRecord:
    name: str
    node_id: str | None = None
    github_id: int | None = None
    color: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class IssueRecord:
    repo: str
    number: int | None
    title: str
    body: str
    labels: tuple[LabelRecord, ...] = ()
    state: str | None = None
    is_pull_request: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    node_id: str | None = None
    github_id: int | None = None
    author_login: str | None = None
    author_association: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Identity within the repository: the number, or the text where no number is known."""
        if self.number is not None:
            return f"#{self.number}"
        digest = hashlib.sha256(f"{self.title}\n\n{self.body}".encode()).hexdigest()
        return f"text:{digest[:40]}"

    @property
    def label_names(self) -> list[str]:
        return sorted({label.name for label in self.labels})

    def content_hash(self) -> str:
        """Changes whenever anything the store keeps about the issue changes."""
        payload = [
            self.title,
            self.body,
            self.state,
            self.is_pull_request,
            _iso(self.created_at),
            _iso(self.updated_at),
            _iso(self.closed_at),
            self.author_login,
            self.author_association,
            self.label_names,
        ]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def parse_datetime(value: object, field_name: str) -> datetime | None:
    """GitHub's ISO 8601 timestamps; a naive one is taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"{field_name}: not an ISO 8601 timestamp: {value!r}") from None
    else:
        raise RecordError(f"{field_name}: expected a timestamp string, got {type(value).__name__}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def storable_text(value: str) -> str:
    """Text every store and the tokenizer can hold: JSON can spell half a surrogate pair
    (\\ud800), which UTF-8 cannot encode, and a NUL character, which PostgreSQL's text cannot
    hold. GitHub sends neither; an export or an API caller may. The first becomes U+FFFD, the
    second is dropped, and the rest of the issue is kept."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def _optional_text(raw: dict[str, Any], key: str, longest: int, *, where: str | None = None) -> str | None:
    """A text field that may be missing; longer than GitHub writes it, it is not a GitHub value."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > longest:
        raise RecordError(
            f"{where or key}: expected a string of at most {longest} characters, got {value!r:.80}"
        )
    return value


def _label(value: object) -> LabelRecord:
    name = value.get("name") if isinstance(value, dict) else value
    if isinstance(name, str) and (not name.strip() or len(name) > 200):
        raise RecordError(f"labels: expected a name of 1 to 200 characters, got {name!r:.80}")
    if isinstance(value, str):
        return LabelRecord(name=value)
    if isinstance(value, dict) and isinstance(name, str):
        github_id = value.get("id")
        if github_id is not None and (isinstance(github_id, bool) or not isinstance(github_id, int)):
            raise RecordError(f"labels: id: expected an integer, got {github_id!r:.80}")
        return LabelRecord(
            name=name,
            node_id=_optional_text(value, "node_id", 100, where="labels: node_id"),
            github_id=github_id,
            color=_optional_text(value, "color", 12, where="labels: color"),
            description=_optional_text(value, "description", 10_000, where="labels: description"),
        )
    raise RecordError(f"labels: expected a name or a label object, got {value!r:.80}")


def _repo_of(raw: dict[str, Any], default_repo: str | None) -> str:
    if isinstance(raw.get("repo"), str):
        return raw["repo"]
    for key in ("repository_url", "url", "html_url"):
        url = raw.get(key)
        if isinstance(url, str):
            match = _REPO_FROM_URL.search(url)
            if match:
                return match.group(1) or match.group(2)
    if isinstance(raw.get("repository"), dict) and raw["repository"].get("full_name"):
        return str(raw["repository"]["full_name"])
    if default_repo:
        return default_repo
    raise RecordError("no repository: give a 'repo' field, a GitHub 'repository_url', or --repo")


def parse_issue(raw: object, default_repo: str | None = None) -> IssueRecord:
    """An issue from a JSONL export row or a raw GitHub REST issue object."""
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    title = raw.get("title")
    if not isinstance(title, str):
        raise RecordError("title: missing or not a string")
    body = raw.get("body") or ""
    if not isinstance(body, str):
        raise RecordError("body: not a string")
    title, body = storable_text(title), storable_text(body)
    labels_raw = raw.get("labels") or []
    if not isinstance(labels_raw, list):
        raise RecordError("labels: expected a list")
    number = raw.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
        raise RecordError(f"number: expected an integer, got {number!r}")
    user = raw.get("user")
    if not isinstance(user, dict):
        user = {}
    node_id = _optional_text(raw, "node_id", 100)
    state = _optional_text(raw, "state", 20)
    author_association = _optional_text(raw, "author_association", 40)
    author_login = _optional_text(user, "login", 200, where="user.login")
    is_pr = raw.get("is_pull_request")
    if is_pr is None:
        is_pr = "pull_request" in raw and raw["pull_request"] is not None
    split = raw.get("split")
    if split is not None and split not in {"train", "validation", "test"}:
        raise RecordError(f"split: expected train, validation or test, got {split!r}")
    return IssueRecord(
        repo=_repo_of(raw, default_repo),
        number=number,
        title=title,
        body=body,
        labels=tuple(dict.fromkeys(_label(item) for item in labels_raw)),
        state=state,
        is_pull_request=bool(is_pr),
        created_at=parse_datetime(raw.get("created_at"), "created_at"),
        updated_at=parse_datetime(raw.get("updated_at"), "updated_at"),
        closed_at=parse_datetime(raw.get("closed_at"), "closed_at"),
        node_id=node_id,
        github_id=raw.get("id") if isinstance(raw.get("id"), int) and "node_id" in raw else None,
        author_login=author_login,
        author_association=author_association,
        split=split,
    )
