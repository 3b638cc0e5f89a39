"""The CPU time of the servers a store URL names, when they run on this machine.

A benchmark whose client processes share the machine's cores with the server runs
out of cores before the server does: its throughput is the machine's, not the
server's. What a write costs the *server* does not depend on that: the CPU seconds
the server's processes spent during the run, divided by the writes. This module
finds those processes from the URL (every loopback ``host:port`` it names, such as
the six nodes of a ``redis+cluster://`` URL or both hosts of a PostgreSQL pair) by
the sockets listening on those ports (``/proc/net/tcp``), and adds up their CPU
time with every descendant's (a PostgreSQL server is a process per connection; the
ones that exited are in their parent's ``cutime``/``cstime``).

Linux only (``/proc``), and only for servers on this machine that this user may
inspect (root, or the same user): otherwise :func:`server_processes` finds nothing
and the figures are None.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["local_ports", "server_processes", "tree_cpu_seconds"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_LISTEN = "0A"
_PROC = Path("/proc")


def local_ports(url: str) -> list[int]:
    """The ports of the loopback hosts ``url`` names (``h1:p1,h2:p2`` lists included)."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    ports: list[int] = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":") if "]" not in item[-1:] else (item, "", "")
        if host in _LOOPBACK and port.isdigit():
            ports.append(int(port))
    return ports


def _listening_inodes(ports: Iterable[int]) -> set[str]:
    wanted = {f"{port:04X}" for port in ports}
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and fields[1].rsplit(":", 1)[1] in wanted:
                inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]


def server_processes(url: str) -> list[int]:
    """The pids of the processes listening on the loopback ports ``url`` names."""
    inodes = _listening_inodes(local_ports(url))
    if not inodes:
        return []
    sockets = {f"socket:[{inode}]" for inode in inodes}
    found: list[int] = []
    for pid in _pids():
        try:
            links = {os.readlink(fd) for fd in (_PROC / str(pid) / "fd").iterdir()}
        except OSError:  # gone, or not ours to look at
            continue
        if links & sockets:
            found.append(pid)
    return found


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    ticks = sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of ``roots`` and every live descendant, with the children each
    has reaped (0.0 when none can be read)."""
    stats = {pid: found for pid in _pids() if (found := _stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total
