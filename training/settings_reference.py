"""``python -m training.settings_reference``: the configuration table of README.md, from Settings."""

from __future__ import annotations

import json

from pydantic import SecretStr

from training.settings import Settings

BEGIN = "<!-- settings-reference:begin -->"
END = "<!-- settings-reference:end -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    return f"`{value}`"


def reference_table() -> str:
    lines = [BEGIN, "| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = f"ISSUE_LABELER_{name.upper()}"
        lines.append(f"| `{env}` | {_default(name)} | {field.description or ''} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_table())  # noqa: T201
