"""The demo page in a real headless Chromium: upload, classes, result image and legend, limits.

Chromium is driven over the DevTools pipe by the ``Chromium`` helper of
``test_audit_browser.py``; the demo server runs in-process on a free port with
small random models.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from maskmine.eval.demo import DemoApp, DemoConfig, make_server
from test_audit_browser import CHROMIUM, Chromium, is_blank
from test_demo import TINY
from test_sample_proposals import DEMO_MIN_ALL, DEMO_MIN_OWN, demo_scene, needs_checkpoint, own_name_fractions, painted_names

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium); "
                       ".ci/run installs it"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Chromium]:
    chrome = Chromium(tmp_path_factory.mktemp("chromium-demo-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    app = DemoApp(DemoConfig(**TINY, max_upload_bytes=150_000, max_pixels=1_000_000))
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def js(browser: Chromium, expression: str):
    reply = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
    return reply["result"].get("value")


def submit(browser: Chromium, url: str, image: Path, classes: str, proposals: str, granularity: str) -> None:
    """Fill the form like a person would and press Segment; returns when the answer has loaded."""
    assert browser.open(url) == []
    document = browser.call("DOM.getDocument", {}, session=True)["root"]["nodeId"]
    node = browser.call("DOM.querySelector", {"nodeId": document, "selector": "#image"}, session=True)["nodeId"]
    browser.call("DOM.setFileInputFiles", {"files": [str(image)], "nodeId": node}, session=True)
    js(browser, f"document.getElementById('classes').value = {json.dumps(classes)};"
                f"document.getElementById('proposals').value = {json.dumps(proposals)};"
                "document.getElementById('proposals').dispatchEvent(new Event('change'));"
                f"document.getElementById('granularity').value = {json.dumps(granularity)};")
    # the slider only applies to SAM
    assert js(browser, "document.getElementById('granularity').disabled") == (proposals != "sam")
    browser.events.clear()
    js(browser, "document.getElementById('submit').click()")
    browser.wait_for("Page.loadEventFired")


def scene(path: Path, h: int = 120, w: int = 160) -> Path:
    """A picture with a few flat regions and some texture."""
    rng = np.random.default_rng(3)
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[: h // 2] = (90, 150, 230)  # sky
    pixels[h // 2 :] = (60, 160, 60)  # grass
    pixels[h // 3 : h - 10, w // 3 : w // 2] = (200, 40, 40)  # a red thing
    pixels = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("proposals", ["maskformer", "sam"])
def test_upload_and_segment_shows_result_and_legend(browser, demo_url, tmp_path, proposals):
    submit(browser, demo_url, scene(tmp_path / "scene.png"), "sky, grass, red car", proposals, "0.6")
    assert js(browser, "document.getElementById('error') === null")
    size = js(browser, "(() => { const i = document.getElementById('result');"
                       " return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null })()")
    assert size == [160, 120]
    legend = js(browser, "Array.from(document.querySelectorAll('#legend li')).map(li => li.textContent)")
    assert legend and all(any(n in item for n in ("sky", "grass", "red car")) for item in legend)
    swatches = js(browser, "Array.from(document.querySelectorAll('#legend .swatch'))"
                           ".map(s => getComputedStyle(s).backgroundColor)")
    assert len(swatches) == len(legend) and len(set(swatches)) == len(swatches)
    assert js(browser, "document.getElementById('classes').value") == "sky, grass, red car"
    shot = browser.screenshot()
    assert not is_blank(shot)
    if proposals == "sam":
        assert "granularity 0.6" in js(browser, "document.body.textContent")
        Image.fromarray(shot).save(tmp_path / "demo.png")


def test_oversized_upload_gets_a_clear_message(browser, demo_url, tmp_path):
    heavy = tmp_path / "heavy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(heavy)
    assert heavy.stat().st_size > 150_000
    submit(browser, demo_url, heavy, "cat", "maskformer", "0.8")
    message = js(browser, "(document.getElementById('error') || {}).textContent")
    assert message and "too large" in message and "146 KB" in message
    assert js(browser, "document.getElementById('result') === null")
    assert js(browser, "document.getElementById('segment-form') !== null")  # the form is still there


def test_too_many_pixels_and_bad_classes_are_shown_on_the_page(browser, demo_url, tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((1100, 1000, 3), np.uint8)).save(wide)  # small file, 1.1 megapixels
    submit(browser, demo_url, wide, "cat", "maskformer", "0.8")
    assert "1.1 megapixels, the limit is 1.0" in js(browser, "document.getElementById('error').textContent")
    submit(browser, demo_url, scene(tmp_path / "s.png"), " , ", "maskformer", "0.8")
    assert "at least one class name" in js(browser, "document.getElementById('error').textContent")


@pytest.fixture(scope="module")
def sample_demo_url() -> Iterator[str]:
    """The demo as `maskmine demo --proposal-checkpoint sample --clip-model sample` serves it."""
    from maskmine.transforms.clip_models import ClipSpec
    from maskmine.transforms.proposals.factory import SAMPLE_PROPOSAL_CHECKPOINT, ProposalSpec

    app = DemoApp(DemoConfig(clip=ClipSpec(model="sample", pretrained="sample"),
                             maskformer=ProposalSpec(checkpoint=SAMPLE_PROPOSAL_CHECKPOINT), device="cpu"))
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@needs_checkpoint
def test_sample_models_paint_an_uploaded_scene_by_its_objects(browser, sample_demo_url, tmp_path):
    """Upload a generated scene, name its classes: each object's pixels are painted with its own name."""
    import base64
    import io

    png, scene, names = demo_scene()
    path = tmp_path / "scene.png"
    path.write_bytes(png)
    submit(browser, sample_demo_url, path, ", ".join(names), "maskformer", "0.8")
    assert js(browser, "document.getElementById('error') === null")
    src = js(browser, "document.getElementById('result').src")
    assert src.startswith("data:image/png;base64,")
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
    assert overlay.shape == scene.image.shape
    legend = js(browser, "Array.from(document.querySelectorAll('#legend li')).map(li => "
                         "[li.childNodes[1].textContent.trim(), li.querySelector('.swatch').style.backgroundColor])")
    colours = {name: "#%02x%02x%02x" % tuple(int(v) for v in rgb[4:-1].split(",")) for name, rgb in legend}
    fractions = own_name_fractions(painted_names(overlay, scene.image, colours), scene)
    assert set(fractions) == {*names, "all"}
    assert min(fractions.values()) >= DEMO_MIN_OWN and fractions["all"] >= DEMO_MIN_ALL, fractions
