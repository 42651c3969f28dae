"""bench/prepared_reads.py as a user runs it: every sweep read three ways, the same rows each way."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READS = (
    "launch sweep: meetings due",
    "watchdog: hosts watched",
    "health sweep: hosts booting",
    "health sweep: healthy, meeting not",
    "termination sweep: meetings to judge",
    "plan: meetings of the horizon",
    "reaper: instances tracked",
)


def test_the_benchmark_times_each_sweep_read_against_a_bare_cursor_and_leaves_nothing_behind():
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ELEPHANT_", "SIM_"))}
    done = subprocess.run(
        [sys.executable, "bench/prepared_reads.py", "--rows", "12", "--repeat", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("database sqlite, 12 lessons (12 hosts)")
    rows = {line[:38].strip(): line[38:].split() for line in lines[2:]}
    assert set(rows) == set(READS)
    # rows, then ORM, prepared and cursor microseconds and the two ratios: numbers, the rows the data holds.
    assert rows["watchdog: hosts watched"][0] == "12"
    assert rows["termination sweep: meetings to judge"][0] == "6"
    for figures in rows.values():
        assert len(figures) == 6 and all(float(f) >= 0 for f in figures)
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) - before == set()
