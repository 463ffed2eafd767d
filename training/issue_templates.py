"""Labels that a repository's issue templates and forms put on new issues by themselves."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import yaml

log = logging.getLogger(__name__)

TEMPLATE_DIR = ".github/ISSUE_TEMPLATE"


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return []


def _front_matter(text: str) -> str | None:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:index])
    return None


def template_labels(path: str, text: str) -> list[str]:
    """Labels one template applies: ``labels:`` of an issue form, or of a Markdown front matter."""
    name = path.rsplit("/", 1)[-1].lower()
    if name in {"config.yml", "config.yaml"}:
        return []
    if name.endswith((".yml", ".yaml")):
        source: str | None = text
    elif name.endswith(".md"):
        source = _front_matter(text)
    else:
        return []
    if source is None:
        return []
    try:
        document = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        log.warning("issue template %s is not valid YAML, its labels are ignored: %s", path, exc)
        return []
    except RecursionError:
        log.warning("issue template %s is nested too deeply to read, its labels are ignored", path)
        return []
    if not isinstance(document, Mapping):
        return []
    return _names(document.get("labels"))
