"""The refresh's allocator setting: large blocks freed by one training step are reused by the
next instead of being faulted in again (measured in fresh processes, as the setting is global)."""

import platform
import subprocess
import sys

CHURN = """
import resource, sys
from training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
size = 64 << 20
def step():
    block = bytearray(size)
    block[:: 1 << 12] = bytes(size >> 12)  # touch every page, like a tensor being written
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.strip())


def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    assert platform.libc_ver()[0] == "glibc", "the project runs on glibc Linux (see deploy/Dockerfile)"
    pages = 10 * (64 << 20) // 4096
    assert _page_faults("default") > pages // 2  # glibc's default maps and unmaps each block
    assert _page_faults("keep") < pages // 20
