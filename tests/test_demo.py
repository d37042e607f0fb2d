"""The demo server over plain HTTP: results, limits and errors come back as pages, never tracebacks."""
from __future__ import annotations

import base64
import io
import re
import threading
import urllib.error
import urllib.request
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from maskmine.eval.demo import DemoApp, DemoConfig, make_server, parse_classes, DemoInputError
from maskmine.pipelines.cli import main
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.proposals.factory import ProposalSpec, SamOptions

TINY = dict(
    clip=ClipSpec(model="maskmine-tiny", pretrained="none"),
    maskformer=ProposalSpec(backend="maskformer", checkpoint="maskmine-tiny"),
    sam=ProposalSpec(backend="sam", sam_model_type="maskmine-tiny",
                     sam=SamOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)),
    device="cpu",
)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(h: int, w: int, seed: int = 0) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = DemoApp(DemoConfig(**TINY, max_upload_bytes=100_000, max_pixels=250_000, max_classes=5))
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def post(url: str, image: bytes, classes: str, proposals: str = "maskformer", granularity: str = "0.8"):
    boundary = "maskmine-test-boundary"
    body = b""
    for name, value in (("classes", classes), ("proposals", proposals), ("granularity", granularity)):
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="up.png"\r\n'
             "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/segment", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def error_of(page: str) -> str:
    found = re.findall(r"<div id='error' role='alert'>(.*?)</div>", page)
    return found[0] if found else ""


def test_form_page(server):
    with urllib.request.urlopen(server + "/") as reply:
        page = reply.read().decode()
    for needle in ("id='image'", "id='classes'", "id='proposals'", "id='granularity'", "value='sam'"):
        assert needle in page
    assert "Traceback" not in page


@pytest.mark.parametrize("backend, granularity", [("maskformer", "0.8"), ("sam", "0.3")])
def test_segment_returns_overlay_and_legend(server, backend, granularity):
    image = noise_png(60, 80)
    status, page = post(server, image, "cat, dog, sky", backend, granularity)
    assert status == 200, error_of(page)
    data = re.findall(r"src='data:image/png;base64,([^']+)'", page)[0]
    with Image.open(io.BytesIO(base64.b64decode(data))) as result:
        assert result.size == (80, 60)
        pixels = np.asarray(result.convert("RGB"))
    legend = re.findall(r"<li><span class='swatch' style='background:(#[0-9a-f]{6})'></span>(\w+) ", page)
    assert legend and {name for _, name in legend} <= {"cat", "dog", "sky"}
    assert not np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))
    if backend == "sam":
        assert "granularity 0.3" in page
    assert "value='cat, dog, sky'" in page  # the form keeps the user's classes


@pytest.mark.parametrize(
    "image, classes, proposals, granularity, status, message",
    [
        ("noise", "", "maskformer", "0.8", 400, "Enter at least one class name"),
        ("noise", "cat, Cat", "maskformer", "0.8", 400, "given twice"),
        ("noise", "a,b,c,d,e,f", "maskformer", "0.8", 400, "the limit is 5"),
        ("text", "cat", "maskformer", "0.8", 400, "not an image"),
        ("truncated", "cat", "maskformer", "0.8", 400, "damaged or truncated"),
        ("empty", "cat", "maskformer", "0.8", 400, "Choose an image file"),
        ("noise", "cat", "sam", "1.5", 400, "Granularity must be between 0 and 1"),
        ("noise", "cat", "sam", "lots", 400, "Granularity must be a number"),
        ("noise", "cat", "detectron", "0.8", 400, "not available"),
        ("huge", "cat", "maskformer", "0.8", 413, "600x600 = 0.4 megapixels, the limit is 0.2 megapixels"),
        ("heavy", "cat", "maskformer", "0.8", 413, "the image limit is 98 KB"),
    ],
)
def test_bad_input_is_a_message_on_the_page(server, image, classes, proposals, granularity, status, message):
    data = {
        "noise": noise_png(40, 40),
        "text": b"this is not an image",
        "truncated": noise_png(40, 40)[:300],
        "empty": b"",
        "huge": png_bytes(np.zeros((600, 600, 3), np.uint8)),  # few bytes, many pixels
        "heavy": noise_png(300, 300),  # ~270 KB of noise
    }[image]
    got, page = post(server, data, classes, proposals, granularity)
    assert got == status
    assert message in error_of(page)
    assert "Traceback" not in page and "<form" in page


def test_unknown_page_and_parse_classes(server):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(server + "/nope")
    assert exc.value.code == 404
    assert parse_classes(" cat ,, big   dog,", 10) == ["cat", "big dog"]
    with pytest.raises(DemoInputError):
        parse_classes("x" * 61, 10)


def test_demo_cli_rejects_bad_flags(capsys):
    assert main(["demo", "--port", "70000", "--clip-model", "maskmine-tiny"]) == 2
    assert "maskmine demo: error: argument --port: must be >= 0 and <= 65535, got 70000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--proposal-checkpoint", "--sam-model-type", "--clip-model",
                 "--max-upload-mb", "--max-megapixels", "127.0.0.1"):
        assert flag in text


def test_maskmine_demo_command_serves_the_page():
    """The real console entry point: binds 127.0.0.1 on a free port, prints the URL, serves, stops on SIGTERM."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "maskmine.pipelines.cli", "demo", "--port", "0", "--clip-model", "maskmine-tiny",
         "--clip-pretrained", "none", "--proposal-checkpoint", "maskmine-tiny", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        with urllib.request.urlopen(url.group(0) + "health", timeout=30) as reply:
            assert reply.read() == b"ok"
        with urllib.request.urlopen(url.group(0), timeout=30) as reply:
            page = reply.read().decode()
        assert "SAM (unavailable)" in page and "SAM needs --sam-checkpoint" in page  # no SAM checkpoint given
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # SIGTERM stops the server as every command stops: one line, status 143
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "maskmine demo: interrupted (SIGTERM); rerun the same command"


def test_an_unavailable_sam_names_its_setting():
    """The library's reason names the setting (the page of ``maskmine demo`` shows its flag, above)."""
    app = DemoApp(DemoConfig(**{**TINY, "sam": ProposalSpec(backend="sam")}))
    assert app.unavailable == {"sam": "SAM needs `sam_checkpoint` (a SAM .pth file)"}
    assert "sam" not in app.backends


def test_user_text_stays_text_on_the_page(server):
    """Class names and form values from the user are escaped wherever the page shows them."""
    classes = "<script>alert(1)</script>, x' onmouseover='alert(2)"
    status, page = post(server, noise_png(60, 80), classes, "maskformer", "0.8")
    assert status == 200, error_of(page)
    assert "<script>alert(1)</script>" not in page and "onmouseover='alert(2)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # in the form's value and the legend
    status, page = post(server, noise_png(60, 80), "cat", "sam", "<b>0.5</b>")
    assert status == 400 and "<b>0.5</b>" not in page and "&lt;b&gt;0.5&lt;/b&gt;" in page


def test_fifty_concurrent_clients_get_an_answer_never_a_reset():
    """Every one of 50 simultaneous uploads is answered 200, 503 (with Retry-After) or 4xx."""
    import http.client

    app = DemoApp(DemoConfig(**TINY, max_upload_bytes=100_000, max_pixels=250_000, max_classes=5, max_queue=2))
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    port = srv.server_address[1]
    boundary = "maskmine-test-boundary"
    image = noise_png(24, 32)
    body = b""
    for name, value in (("classes", "cat, dog"), ("proposals", "maskformer"), ("granularity", "0.8")):
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="up.png"\r\n'
             "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    clients = 50
    start = threading.Barrier(clients)
    results: list = [None] * clients

    def client(i: int) -> None:
        start.wait()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("POST", "/segment", body=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            reply = conn.getresponse()
            reply.read()
            results[i] = (reply.status, reply.getheader("Retry-After"))
        except (OSError, http.client.HTTPException) as exc:  # a reset, a refused connection, a closed socket
            results[i] = (type(exc).__name__, str(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        srv.shutdown()
        srv.server_close()
    assert all(not t.is_alive() for t in threads)
    failures = [r for r in results if r is None or not isinstance(r[0], int)]
    assert not failures, f"{len(failures)} of {clients} clients got no HTTP answer, e.g. {failures[:3]}"
    statuses = [status for status, _ in results]
    assert all(s in (200, 503) or 400 <= s < 500 for s in statuses), statuses
    assert 200 in statuses
    assert all(retry is not None and int(retry) >= 1 for status, retry in results if status == 503)
