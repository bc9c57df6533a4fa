"""Chromium renders under the service unit's own syscall sandbox (emulated by tests/unitbox.py).

The unit denies ``@privileged`` and ``@resources`` syscalls and write-and-execute memory;
Chromium's zygote (``capset``) and V8's JIT (executable memory) both die under that, so
aggregator runs Chromium without either. This test would catch a flag that brings one back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browserrig import require_chromium
from tests.server import TestServer

ROOT = Path(__file__).parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
RENDER = """
import asyncio, sys
from aggregator.config import BrowserConfig, FetchConfig
from aggregator.chromium import Chromium
from aggregator.fetch.browser import render
from aggregator.digest.card import Card
from aggregator.digest.image import DiffImages, ImageSettings
from pathlib import Path

async def main():
    browser = BrowserConfig()
    chromium = Chromium(browser.settings())
    page = await render(chromium, sys.argv[1], headers={}, wait_for="", browser=browser,
                        fetch=FetchConfig())
    card = Card("s", "https://news.example/", "Old title", "New title", "a", "b", 1, 2, "", "")
    images = DiffImages(ImageSettings(Path(sys.argv[2]), 10**7, 1200, 2000, browser.settings()),
                        chromium)
    png = await images.png(card)
    await chromium.close()
    print(page.body.decode().count("<article"), png[:8] == b"\\x89PNG\\r\\n\\x1a\\n")

asyncio.run(main())
"""


def _missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    if shutil.which("systemd-analyze") is None:
        return "no systemd-analyze (apt-get install systemd: only its listing is used)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True)
    if probe.returncode:
        return "no libseccomp for Python (apt-get install python3-seccomp)"
    return None


@pytest.mark.parametrize("unit", ["aggregator.service", "aggregator-web.service"])
def test_chromium_renders_under_the_units_syscall_filter(
    unit: str, server: TestServer, tmp_path: Path
) -> None:
    """A script-built page and a diff card both render inside the unit's seccomp and MDWE."""
    require_chromium()
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the unit sandbox test: {reason}")
        pytest.skip(reason)
    page = (
        "<!DOCTYPE html><html><body><main></main><script>for (const t of ['one', 'two']) {"
        " const a = document.createElement('article'); a.textContent = t;"
        " document.querySelector('main').appendChild(a); }</script></body></html>"
    )
    server.serve("/p/", page, content_type="text/html; charset=utf-8")
    run = subprocess.run(
        [SYSTEM_PYTHON, str(ROOT / "tests" / "unitbox.py"), str(ROOT / "systemd" / unit), "--",
         sys.executable, "-c", RENDER, server.url("/p/"), str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[-1].split() == ["2", "True"], run.stdout[-3000:]
