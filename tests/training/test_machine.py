"""What benchmarks record about the machine they ran on."""

import os
from pathlib import Path

from training.machine import cpu_steal_seconds


def test_steal_time_is_read_from_the_all_cpus_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice, as Linux writes them
    stat.write_text("cpu  3361916 37382 424962 1243899 5347 0 7369 102816 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert cpu_steal_seconds(stat) == 102816 / os.sysconf("SC_CLK_TCK")
    assert cpu_steal_seconds(tmp_path / "absent") is None
    for unexpected in ("intr 1 2 3\n", "\n", ""):
        stat.write_text(unexpected)
        assert cpu_steal_seconds(stat) is None
