"""A headless Chromium for the tests of pages (Debian's chromium, driven by Selenium through
Debian's chromium-driver: no browser is downloaded), signed in with Zope's basic auth."""
from __future__ import annotations

import base64
import shutil

import pytest


def browser(user, password):
    webdriver = pytest.importorskip('selenium.webdriver')
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which('chromium'), shutil.which('chromedriver')
    if not chromium or not driver:
        pytest.skip("chromium and chromium-driver are not installed: run `make deps` (it "
                    "installs Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
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
    """The element's text; '' while the page reloads (the element of the old page is gone)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    try:
        return chrome.find_element(By.CSS_SELECTOR, selector).text
    except StaleElementReferenceException:
        return ''
