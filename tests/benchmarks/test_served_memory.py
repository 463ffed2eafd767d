"""The served-memory benchmark serves every copy under each bound and counts the lookups that
had to load a model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import served_memory
from tests.bot.conftest import BUNDLE_LABELS
from tests.bot.helpers import build_bundle


def test_each_bound_keeps_its_number_of_models_and_reloads_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build_bundle(tmp_path / "registry", "octo-org/hello-world", BUNDLE_LABELS)
    out = tmp_path / "memory.json"
    argv = ["served_memory", "--bundle", str(tmp_path / "registry" / "octo-org__hello-world" / "current")]
    argv += ["--copies", "3", "--bounds", "0,1", "--rounds", "2", "--threads", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert served_memory.main() == 0

    unbounded, bounded = json.loads(out.read_text())["runs"]
    assert (unbounded["bound"], unbounded["models_loaded_at_end"], unbounded["lookups_that_loaded"]) == (
        0,
        3,
        0,
    )
    # one model loaded at start; then each of the other issues finds its model unloaded
    assert (bounded["bound"], bounded["models_loaded_at_end"], bounded["lookups_that_loaded"]) == (1, 1, 5)
    assert bounded["lookup_that_loaded_ms"]["median"] > 0
    assert all(mb > 0 for mb in bounded["rss_after_each_round_mb"])
    assert "| 1 |" in capsys.readouterr().out
