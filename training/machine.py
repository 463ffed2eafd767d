"""The CPU that timings were taken on (a bundle's stage timings, the benchmarks' JSON): the same
code measures 2-3x apart across x86 machines (a Zen 4 with AVX512-VNNI runs the INT8 model about
twice as fast as a Zen 3 with AVX2 only)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Instruction sets that decide how fast int8 and fp32 matrix products run on x86.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    info: dict[str, object] = {"arch": platform.machine(), "cores": os.cpu_count()}
    try:
        first = cpuinfo.read_text().split("\n\n")[0]
    except OSError:
        return info  # not Linux: the architecture and core count are all there is
    fields = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    info["model_name"] = fields.get("model name")
    info["family_model"] = f"{fields.get('cpu family')}/{fields.get('model')}"
    info["flags"] = [flag for flag in FLAGS if flag in flags]
    return info


def describe(info: dict[str, object]) -> str:
    """One line for a benchmark's printed table."""
    flags = ", ".join(info.get("flags") or []) or "none of " + ", ".join(FLAGS)  # type: ignore[arg-type]
    return (
        f"cpu: {info.get('model_name') or info['arch']} (family/model {info.get('family_model')}), "
        f"{info['cores']} cores; {flags}"
    )


def cpu_steal_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU time the hypervisor gave other guests, all cores together (Linux; None elsewhere).

    On a shared VM a burst of it slows a benchmark run several-fold; recording it tells such a
    run from a slower build."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")
