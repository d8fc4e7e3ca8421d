"""Which process owns a run, and whether that process still exists.

A pid alone is not enough: pids are reused. On Linux the process start time (in clock ticks
since boot) plus the boot id names one process for ever; elsewhere we fall back to the pid.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    started: str | None  # "<boot id>:<start ticks>" on Linux, None where unknown
    host: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_started(pid: int) -> str | None:
    """A token that differs between two processes that had the same pid; None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the command name, which may itself hold spaces or parentheses
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):  # a zombie has exited; only its exit status is left to collect
        return None
    return f"{_boot_id()}:{rest[19]}"  # field 22 of proc(5): starttime


def this_process() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(pid, process_started(pid), socket.gethostname())


def process_alive(pid: int | None, started: str | None, host: str | None) -> bool | None:
    """True if that very process still runs, False if it is gone, None if this host cannot tell."""
    if pid is None or host != socket.gethostname():
        return None
    if Path("/proc").is_dir() and started is not None:
        return process_started(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
