"""The service's page in a real headless browser (Debian's chromium, driven by selenium through the
system's chromedriver): the bundled example read, a question asked and answered by the embedded
model, and the span that holds the answer highlighted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from test_serve import Running  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
EXAMPLE = Path(__file__).resolve().parents[1] / "ilre" / "examples" / "town_chronicle.txt"


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed "
                                                      "(apt-get install chromium chromium-driver)")
def test_the_page_answers_about_the_example_and_highlights_the_answer(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as Driver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ilre.serve.__main__ import build_parser, make_service
    from ilre.serve.app import create_app

    running = Running(create_app(make_service(build_parser().parse_args(["--device", "cpu", "--threads", "2"]))))
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Driver(DRIVER), options=options)
    try:
        browser.get(running.url + "/")
        text = EXAMPLE.read_text(encoding="utf-8")
        browser.execute_script("document.getElementById('document').value = arguments[0];", text)
        browser.find_element(By.ID, "encode").click()
        WebDriverWait(browser, 300).until(lambda b: b.find_element(By.ID, "ask").is_enabled())
        assert "ready" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "question").send_keys("What is the combination of the old lighthouse safe?")
        browser.find_element(By.ID, "ask").click()
        WebDriverWait(browser, 300).until(lambda b: b.find_element(By.ID, "facts").text)
        assert "7342" in browser.find_element(By.ID, "answer").text
        marks = browser.find_elements(By.TAG_NAME, "mark")
        holding = [m for m in marks if "7342" in m.text]
        assert holding, "no highlighted span holds the answer"
        # the page shows the document itself: the highlighted text sits where the span says
        view = browser.find_element(By.ID, "view").text
        assert view.replace("\n", "") == text.replace("\n", "")
        browser.find_elements(By.CSS_SELECTOR, "#spans a")[marks.index(holding[0])].click()
        assert "current" in holding[0].get_attribute("class")
        assert "attention" in holding[0].get_attribute("title") and "lines" in holding[0].get_attribute("title")
        browser.save_screenshot(os.environ.get("ILRE_PAGE_SCREENSHOT", str(tmp_path / "page.png")))
    finally:
        browser.quit()
        running.close()
