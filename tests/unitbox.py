"""Run a command under the syscall sandbox a systemd unit file declares (an emulation).

    /usr/bin/python3 tests/unitbox.py systemd/aggregator.service -- COMMAND ARGS...

Reads the unit's ``SystemCallFilter=`` lines (allow-list, ``~`` deny-lists, later lines
adding to or removing from it, as systemd combines them), ``SystemCallErrorNumber=``,
``RestrictAddressFamilies=``, ``MemoryDenyWriteExecute=`` and ``NoNewPrivileges=``;
expands ``@groups`` with ``systemd-analyze syscall-filter`` (a listing, nothing is
started); loads the filter with libseccomp (Debian's python3-seccomp, hence the
system Python) and sets the kernel's ``PR_SET_MDWE``; then execs COMMAND. Not systemd:
no namespaces, mounts or cgroups, only the limits a page's code meets in-process.
Written for these tests.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1


@cache
def group(name: str) -> frozenset[str]:
    """The syscalls of ``@name`` (nested groups expanded), or ``{name}`` for a syscall."""
    if not name.startswith("@"):
        return frozenset({name})
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    found: set[str] = set()
    for line in listing.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            found |= group(line)
    return frozenset(found)


def settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit's [Service] section, values in order."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def allowed_syscalls(lines: list[str]) -> set[str]:
    """systemd's reading: the first non-~ line is the allow-list; ~ lines remove, others add."""
    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names = set().union(*(group(n) for n in line.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def main() -> None:
    import seccomp  # Debian: apt-get install python3-seccomp

    unit = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1 :]
    conf = settings(unit)
    code = getattr(errno, conf.get("SystemCallErrorNumber", ["EPERM"])[-1])
    syscalls = seccomp.SyscallFilter(defaction=seccomp.ERRNO(code))
    for name in sorted(allowed_syscalls(conf.get("SystemCallFilter", [])) - {"socket"}):
        try:
            syscalls.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a syscall on this architecture
    families = " ".join(conf.get("RestrictAddressFamilies", [])).split()
    for family in families or ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]:
        syscalls.add_rule(
            seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, getattr(socket, family))
        )
    libc = ctypes.CDLL(None, use_errno=True)
    if conf.get("NoNewPrivileges", ["no"])[-1] == "yes":
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    mdwe = conf.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    if mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit("unitbox: this kernel has no PR_SET_MDWE (Linux 6.3+)")
    syscalls.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
