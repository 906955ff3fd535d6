"""The web app in a real headless Chromium (Debian's chromium + chromium-driver, which
`make setup` installs): ``interlace app`` serves it on a tiny model, the page loads, the
Winograd example runs, and its heatmaps are on the page."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tracer import testing

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _missing() -> str:
    try:
        import selenium  # noqa: F401
        import streamlit  # noqa: F401
    except ImportError as error:
        return str(error)
    return "" if CHROMIUM and DRIVER else "Debian's chromium and chromium-driver are not installed"


@pytest.fixture
def served(tmp_path):
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {why} (make setup installs them)")
        pytest.skip(why)
    folder = testing.save_tiny("llama", tmp_path / "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "interlace"
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([str(exe), "app", "--model", str(folder), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, killed as one
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the app did not start:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_winograd_example_in_headless_chromium(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # no driver download
    try:
        driver.get(served)
        wait = WebDriverWait(driver, 120)
        run = wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//button[.//p[normalize-space()='Run']]")))
        # the seed's example fills the form
        wait.until(lambda d: any("Paul tried to call George" in (t.get_attribute("value") or "")
                                 for t in d.find_elements(By.TAG_NAME, "textarea")))
        run.click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".vega-embed")) >= 4)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stDataFrame']"))
        driver.save_screenshot(os.environ.get("INTERLACE_APP_SCREENSHOT", str(tmp_path / "app.png")))
        charts = driver.find_elements(By.CSS_SELECTOR, ".vega-embed")
        assert len(charts) == 4 and all(c.size["height"] > 100 for c in charts)
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
    finally:
        driver.quit()
