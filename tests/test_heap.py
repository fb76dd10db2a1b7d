"""Large freed blocks are kept for reuse (heap.py): counted in page faults, in a fresh
interpreter each, since the setting holds for the whole process."""

import subprocess
import sys

import pytest

from helpers import REPO

PROBE = """
import resource, sys, torch
from immersions.heap import keep_large_blocks
kept = keep_large_blocks() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per = []
for _ in range(30):
    before = faults()
    block = torch.ones(40 << 18)  # 40 MB, every page touched
    small = torch.ones(1000)  # something allocated after it, as between a step's tensors
    del block
    per.append(faults() - before)
print(kept, sum(per[-10:]))
"""


def run(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_40_mb_block_is_reused_instead_of_mapped_and_zeroed_again():
    kept, faults_kept = run("keep")
    _, faults_plain = run("plain")
    assert kept == "True"
    assert faults_plain > 10 * 5000  # 40 MB is about 10 000 pages, faulted in afresh every time
    assert faults_kept < 100  # once the heap has settled, the same block comes back
