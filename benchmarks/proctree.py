"""Run a command and measure its whole process tree: peak memory, CPU time, wall time.

netbench runs as a parent plus spawned worker processes, so one process's peak is not the
client's footprint. `measure` polls /proc for the tree (this kernel has no
/proc/PID/task/TID/children, so the tree is found from each process's parent pid) and keeps
every process's high-water mark (VmHWM); the tree's peak is the sum of those marks, which
counts a short spike of any process even when the polls fall between its samples.
CPU time comes from wait4's rusage: the root and every descendant it reaped.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_SAMPLE_S = 0.02  # how often the known processes' memory is read
_RESCAN_S = 0.25  # how often /proc is scanned for new descendants (a scan costs ~2.5 ms)


@dataclass(frozen=True)
class TreeStats:
    """What one command cost, over its whole process tree."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # user + system, root and reaped descendants
    peak_rss_kib: int  # sum over the tree's processes of each one's peak resident set
    peak_sampled_rss_kib: int  # the largest tree total seen in one poll
    processes: int  # how many processes the tree had at most (root included)


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: parse after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(name)] = int(fields[1])
    return parents


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _parent_pids().items():
        children.setdefault(parent, []).append(pid)
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def _memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process, KiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0])
    if len(values) < 2:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values["VmHWM"]


def measure(command: Sequence[str], timeout_s: float, cwd: Path | None = None) -> TreeStats:
    """Run `command` to completion, polling its process tree; raise TimeoutError past timeout_s."""
    # Files, not pipes: a chatty child can never block on a full pipe while we poll.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
        peaks: dict[int, int] = {}
        peak_sampled = 0
        tree = {proc.pid}
        next_scan = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now - started > timeout_s:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{command[0]} ran past {timeout_s:.0f} s")
            if now >= next_scan:
                tree |= _descendants(proc.pid)
                next_scan = now + _RESCAN_S
            total = 0
            for member in tuple(tree):
                memory = _memory_kib(member)
                if memory is None:
                    continue
                rss, hwm = memory
                total += rss
                peaks[member] = max(peaks.get(member, 0), hwm)
            peak_sampled = max(peak_sampled, total)
            time.sleep(_SAMPLE_S)
        wall_s = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return TreeStats(
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            wall_s=wall_s,
            cpu_s=usage.ru_utime + usage.ru_stime,
            # A tree that ended before the first poll: its root's own peak is all there is.
            peak_rss_kib=sum(peaks.values()) or usage.ru_maxrss,
            peak_sampled_rss_kib=peak_sampled,
            processes=max(len(peaks), 1),
        )
