"""Start Chromium, find it, and read what its process tree costs. No CDP here.

Chromium is started directly (``posix_spawn``) with ``--remote-debugging-pipe``:
commands go in on its fd 3, answers come out on its fd 4. No driver process
sits between us and it (Playwright's Node.js driver alone measured about
110 MiB PSS and 5-11 threads here). It runs in its own session, so the whole
tree can be killed at once, and it exits by itself when the pipe closes (our
process died).

The flags keep the tree small (the network service and the GPU thread inside
the browser process, a capped thread pool and renderer count), let it run
under the service unit's sandbox (no zygote: it calls ``capset``, which the
unit refuses; ``--js-flags=--jitless``: no executable memory is ever made, which
``MemoryDenyWriteExecute=yes`` would refuse) and keep it safe: a JavaScript
heap cap per renderer, no local DNS at all (every name goes to our SOCKS guard,
see ``aggregator.fetch.socks``), WebRTC without non-proxied UDP, permission
prompts denied, images not loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

#: Names tried on ``$PATH`` when ``[browser] executable`` is not set.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome")
INSTALL_HINT = "install it with `apt-get install chromium` (Debian, Ubuntu)"


@dataclass(frozen=True, slots=True)
class ChromiumSettings:
    """How to run Chromium (filled from ``[browser]``)."""

    executable: str
    #: Pages open at once (also the renderer process limit).
    pages: int = 1
    #: Budget for the whole Chromium tree's PSS, bytes; past it the largest renderer is killed.
    memory_limit: int = 320 * 2**20
    #: Seconds without an open page after which Chromium is closed (restarted on demand).
    idle_close: float = 120.0
    extra_flags: tuple[str, ...] = ()
    #: ``--proxy-server`` for Chromium's own default context (a listener that refuses all).
    default_proxy: str = ""

    @property
    def js_heap_mib(self) -> int:
        """The V8 heap cap per renderer: a third of the budget, at least 32 MiB."""
        return max(32, self.memory_limit // 3 // 2**20)


#: Features that would reach the network on their own, upgrade http:// pages to https://,
#: hold back painting, or only cost memory and threads here.
DISABLED_FEATURES = (
    "HttpsUpgrades", "HttpsFirstBalancedModeAutoEnable", "PreconnectToSearch",
    "NetworkTimeServiceQuerying", "OptimizationHints", "MediaRouter", "Translate",
    "LensOverlay", "AimEnabled", "PaintHolding", "AutofillServerCommunication",
    "InterestFeedContentSuggestions", "SpareRendererForSitePerProcess", "HangWatcher",
    "DestroyProfileOnBrowserClose", "ThirdPartyStoragePartitioning",
)  # fmt: skip


def find_executable(configured: str = "") -> str | None:
    """The Chromium to run: ``configured`` (a path or a name on ``$PATH``), else a known name."""
    names = (configured,) if configured else CANDIDATES
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_message(configured: str = "") -> str:
    """Why no Chromium can be started, and what to install."""
    if configured:
        return f"Chromium not found at {configured!r} ([browser] executable): {INSTALL_HINT}"
    return (
        f"Chromium not found (looked for {', '.join(CANDIDATES)} on $PATH): {INSTALL_HINT},"
        " or set [browser] executable"
    )


def flags(settings: ChromiumSettings, profile: Path) -> list[str]:
    """The command line (after the executable)."""
    js = f"--jitless --max-old-space-size={settings.js_heap_mib}"
    features = (
        "NetworkServiceInProcess2,BrowserThreadPoolAdjustment:min/3/max/4/cores_multiplier/0.1"
    )
    out = [
        "--headless",
        "--no-sandbox",  # root and DynamicUser both refuse its namespaces; see docs/browser.md
        "--disable-gpu",
        "--in-process-gpu",
        # no zygote: it calls capset, which the unit's SystemCallFilter=~@privileged refuses,
        # and every renderer then dies at start (costs ~150 ms CPU more per page)
        "--no-zygote",
        f"--renderer-process-limit={settings.pages}",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--disable-dev-shm-usage",
        "--deny-permission-prompts",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-color-profile=srgb",  # pictures keep the exact colours the card asks for
        "--no-startup-window",
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        f"--js-flags={js}",
        f"--enable-features={features}",
        f"--disable-features={','.join(DISABLED_FEATURES)}",
        "--disable-field-trial-config",
        "--disable-background-timer-throttling",
        "--disable-backgrounding-occluded-windows",
        "--disable-renderer-backgrounding",
        "--disable-hang-monitor",
        "--metrics-recording-only",
        "--password-store=basic",
        "--use-mock-keychain",
        "--no-service-autorun",
        "--disable-search-engine-choice-screen",
        "--blink-settings=imagesEnabled=false",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        # no name is ever resolved by Chromium: SOCKS5 hands names to our guard
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-bypass-list=<-loopback>",
    ]
    if settings.default_proxy:
        out.append(f"--proxy-server={settings.default_proxy}")
    return out + list(settings.extra_flags)


@dataclass(slots=True)
class Spawned:
    """A started Chromium: its pid, a pidfd to wait on, and our ends of the pipe."""

    pid: int
    pidfd: int
    commands: int  # we write here (its fd 3)
    answers: int  # we read here (its fd 4)
    profile: Path
    closed: bool = field(default=False)

    def kill(self) -> None:
        """SIGKILL the whole tree (its session), then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)
        self.reap(block=True)

    def reap(self, *, block: bool = False) -> bool:
        """Collect the exit status if it has exited; True once it has."""
        if self.closed:
            return True
        try:
            done, _ = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        if done:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            shutil.rmtree(self.profile, ignore_errors=True)
        return self.closed


def _high(fd: int) -> int:
    """``fd`` moved to a number above 10 (so a dup onto 3 or 4 never meets itself)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def spawn(settings: ChromiumSettings, profile: Path) -> Spawned:
    """Start Chromium with the debugging pipe on its fds 3 and 4; stderr discarded."""
    their_in, our_out = map(_high, os.pipe())
    our_in, their_out = map(_high, os.pipe())
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(profile),  # DynamicUser has no home; nothing is kept after a run
        "XDG_CONFIG_HOME": str(profile / "config"),
        "XDG_CACHE_HOME": str(profile / "cache"),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),  # noqa: S108 - PrivateTmp under the unit
        "LANG": "C.UTF-8",
        "FONTCONFIG_PATH": os.environ.get("FONTCONFIG_PATH", "/etc/fonts"),
    }
    argv = [settings.executable, *flags(settings, profile)]
    try:
        pid = os.posix_spawn(
            settings.executable,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, their_in, 3),
                (os.POSIX_SPAWN_DUP2, their_out, 4),
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
            ],
            setsid=True,
        )
    except OSError:
        for fd in (their_in, our_out, our_in, their_out):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.close(their_in)
        with contextlib.suppress(OSError):
            os.close(their_out)
    return Spawned(pid, os.pidfd_open(pid), our_out, our_in, profile)


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (from /proc's child lists, else a scan)."""
    if not Path(f"/proc/{root}/task/{root}/children").exists():
        return _scanned_tree(root) if Path(f"/proc/{root}").exists() else []
    return _children_tree(root)


def _children_tree(root: int) -> list[int]:
    """The tree from ``/proc/PID/task/TID/children`` (cheap: no scan of every process)."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            threads = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue  # the process ended meanwhile
        for task in threads:
            try:
                stack.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue  # the thread ended meanwhile
    return found


def _scanned_tree(root: int) -> list[int]:
    """The tree from every process's parent pid (a kernel without child lists)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """One process: pid, PSS bytes, threads, and whether it is a renderer."""

    pid: int
    pss: int
    threads: int
    renderer: bool


def usage(pid: int) -> ProcessUsage | None:
    """PSS (shared pages split between their users, as the cgroup charges them) and threads."""
    try:
        pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
        threads = sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    renderer = b"--type=renderer" in cmdline or b"--renderer-client-id" in cmdline
    return ProcessUsage(pid, pss, threads, renderer)


def tree_usage(root: int) -> list[ProcessUsage]:
    """``usage`` of ``root`` and its descendants (processes that vanished are left out)."""
    return [u for u in map(usage, descendants(root)) if u is not None]
