"""Debian's chromium driven by Playwright, for the tests that look at JupyterLab in a browser.

``make test`` installs chromium (scripts/chromium-test.sh) where it can; elsewhere those tests are
skipped with ``needs_chromium``, saying why. ``PIPENB_TEST_CHROMIUM`` points at another binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PIPENB_TEST_CHROMIUM", "/usr/bin/chromium")

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)),
    reason=f"no chromium at {CHROMIUM} (make test installs Debian's chromium when it can)",
)


def launch(pw: Any) -> Any:
    """A headless chromium that talks to nobody but the page under test."""
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-gpu",
            "--no-first-run",
        ],
    )
