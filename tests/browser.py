"""Headless Chromium through Playwright, for the tests that open pages: the system's
Chromium (Playwright's own download cannot work offline), and the marks that skip
those tests where it or Playwright is missing."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - CI installs it from requirements.txt
    expect = sync_playwright = None

NEEDS_BROWSER = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it with .ci/install-browser.sh)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -r requirements.txt)"),
]
