"""Headless Chromium (Debian's `chromium`, installed by `make deps`) for looking at pages."""
from __future__ import annotations

import shutil
import subprocess

import pytest

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
         '--no-first-run', '--disable-dev-shm-usage']


def chromium():
    """The browser's path, or skip saying how to install it."""
    path = shutil.which('chromium') or shutil.which('chromium-browser')
    if not path:
        pytest.skip('chromium is not installed and could not be: run `make deps` (it installs '
                    "Debian's chromium through scripts/ensure-system-packages)")
    return path


def dump_dom(url, timeout=60):
    """The page's DOM after Chromium rendered it."""
    proc = subprocess.run([chromium(), *FLAGS, '--dump-dom', url], capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def screenshot(url, png_path, width=1280, height=800, timeout=60):
    proc = subprocess.run([chromium(), *FLAGS, '--window-size=%d,%d' % (width, height),
                           '--screenshot=%s' % png_path, url], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0 and png_path.exists(), proc.stderr[-3000:]
    return png_path
