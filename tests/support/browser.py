"""Headless Chromium (Debian's `chromium`, installed by `make deps`) for looking at pages: its
command line for a DOM or a screenshot, and Selenium (through Debian's chromium-driver: no
browser is downloaded) for a page a user clicks through, signed in with Zope's basic auth."""
from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
         '--no-first-run', '--disable-dev-shm-usage']


def chromium():
    """The browser's path, or fail saying how to install it (the project installs it)."""
    path = shutil.which('chromium') or shutil.which('chromium-browser')
    if not path:
        pytest.fail('chromium is not installed and could not be: run `make deps` (it installs '
                    "Debian's chromium through scripts/ensure-system-packages)", pytrace=False)
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


def browser(user, password):
    from selenium import webdriver  # requirements.txt
    from selenium.webdriver.chrome.service import Service
    binary, driver = chromium(), shutil.which('chromedriver')
    # The project installs it (make deps): a test that cannot run fails, it is not skipped.
    assert driver, ("chromium-driver is not installed: run `make deps` (it installs Debian's "
                    "chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--window-size=1280,720', '--no-first-run'):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    # Elements of a page that is still loading (after a click that navigates) are waited for.
    chrome.implicitly_wait(30)
    # Zope's basic auth on every request the page makes (the page, its polls, its forms).
    auth = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    chrome.execute_cdp_cmd('Network.enable', {})
    chrome.execute_cdp_cmd('Network.setExtraHTTPHeaders',
                           {'headers': {'Authorization': 'Basic ' + auth}})
    return chrome


def text_of(chrome, selector):
    """The element's text; '' while the page reloads (the element of the old page is gone, or
    Chromium's inspector answers "unknown error" for a document being replaced): for polls."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    try:
        return chrome.find_element(By.CSS_SELECTOR, selector).text
    except StaleElementReferenceException:
        return ''
    except WebDriverException as exc:
        if 'unknown error' in str(exc):
            return ''
        raise
