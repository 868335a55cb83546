"""Ports of the serving stack: checked free before anything is launched, and — once a server
answers — checked to belong to the process we started (Linux ``/proc``), so a server of another
work directory on the same port is never taken for ours.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

from serendip.errors import ConfigError


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports the OS reports free on ``host`` now (all sockets held until each
    is chosen, so the ports differ); the one helper for test servers, benchmarks and the demo."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port the OS reports free on ``host`` now (:func:`free_ports`)."""
    return free_ports(1, host)[0]


def port_free(host: str, port: int) -> bool:
    """True when a listening socket can bind ``host:port`` now (SO_REUSEADDR like the servers:
    a TIME_WAIT leftover does not count as busy; no SO_REUSEPORT: a listener does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True      # an unresolvable host fails later with the server's own message
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _listen_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes


def _pid_sockets(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


def listener_pids(port: int) -> list[int] | None:
    """PIDs with a socket listening on ``port`` (those this user may inspect); ``None``
    where /proc is not available."""
    if not Path("/proc/net/tcp").exists():
        return None
    inodes = _listen_inodes(port)
    if not inodes:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _pid_sockets(int(entry.name)) & inodes:
            pids.append(int(entry.name))
    return sorted(pids)


def owns_port(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the listening socket of ``port``; ``None`` when this
    cannot be told (no /proc)."""
    if not Path("/proc/net/tcp").exists():
        return None
    return bool(_listen_inodes(port) & _pid_sockets(pid))


def owned_by_tree(pid: int, port: int) -> bool | None:
    """Whether ``pid`` or one of its children holds the listening socket of ``port``
    (``serendip serve`` holds the KServe ports itself, its tritonserver child the Triton
    ones); ``None`` without /proc."""
    pids = listener_pids(port)
    if pids is None:
        return None
    for lp in pids:
        if lp == pid:
            return True
        try:
            stat = Path(f"/proc/{lp}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def describe_pids(pids: list[int] | None) -> str:
    if not pids:
        return ""
    names = []
    for pid in pids[:3]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            cmd = "?"
        names.append(f"pid {pid}: {cmd[:80]}")
    return " (" + "; ".join(names) + ")"


def check_ports_free(host: str, ports: Iterable[tuple[str, int]]) -> None:
    """Every ``(option, port)`` free on ``host``, else one line naming the first busy one.

    Raises:
        ConfigError: a port is in use (field = the command-line option that sets it).
    """
    for option, port in ports:
        if not port_free(host, port):
            raise ConfigError(f"port {port} on {host} is already in use"
                              f"{describe_pids(listener_pids(port))}", field=option,
                              fix=f"stop that server or pick a free port with {option}")
