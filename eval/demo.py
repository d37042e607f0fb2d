"""``maskmine demo``: a local web page to try open-vocabulary segmentation on one image.

Stdlib only (``http.server``): a form with an image upload, comma-separated
class names, the proposal model (MaskFormer or SAM) and SAM's granularity;
the answer is the same page with the coloured segmentation over the image and
a legend. Classification is CLIP alone (OVSeg's demo setting, CLIP_ENSEMBLE_WEIGHT 0). MaskFormer's
masks are painted by one of two inferences (``DemoConfig.inference``, ``--inference``):

* ``maskmine`` (default): maskmine's evaluation inference (:func:`maskmine.eval.inference.segment`:
  soft masks, threshold 0.4, every mask); with one class name, pixels where "others" wins stay
  unpainted;
* ``ovseg-demo``: OVSeg's demo inference (:mod:`maskmine.eval.ovseg_demo`, ``OVSegDEMO.demo_inference``,
  ov-seg@36f49d4 open_vocab_seg/ovseg_model.py lines 429-460: masks binarised at 0.35, only the best
  mask of each class kept, "others" painted with its label).

``DemoConfig.test_size`` (``--test-size 640``) resizes the image as OVSeg's predictor does before
proposals and crops (:mod:`maskmine.eval.shortest_edge`). SAM's masks always go through granularity
fusion. The page says which inference and size made the picture.

Input is checked before any model runs: request and image byte size, pixel
count (read from the header, before decoding, so a decompression bomb is
refused cheaply), class list length and shape. Every problem comes back as a
message on the page with a 4xx status; an unexpected failure is logged and
shown as a one-line "internal error", never a stack trace.

Limits that keep one client from blocking or exhausting the server: every
socket read times out after ``read_timeout`` seconds and a request body must
arrive whole within that time (else 408 and the connection is closed); one
segmentation runs at a time, at most ``max_queue`` more requests wait for it,
and a request beyond that, or one that waited ``queue_timeout`` seconds, is
answered with 503 "busy, try again" and a ``Retry-After`` header (after its
body was read, so the client sees the answer, not a reset). At most
``max_connections`` connections are served at once; more wait, unanswered but
not refused, in the listen queue of ``backlog`` connections (socketserver's
default of 5 reset 7 to 28 of 50 simultaneous uploads).
"""
from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import io
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import jinja2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskmine.eval.inference import DEFAULT_MASK_THRESHOLD, RegionClassifier, build_classifier, segment
from maskmine.eval.ovseg_demo import OVSEG_DEMO_MASK_THRESHOLD, demo_class_names, segment_ovseg_demo
from maskmine.eval.proposal_classes import maskformer_eval_proposals
from maskmine.eval.settings import DEMO_INFERENCES, SAM_GRANULARITY
from maskmine.eval.shortest_edge import OVSEG_MIN_SIZE_TEST, at_test_size
from maskmine.eval.visualise import colour_table, hex_colour, overlay
from maskmine.transforms import ranges
from maskmine.transforms.errors import UserError
from maskmine.transforms.devices import resolve_device
from maskmine.transforms.clip_models import ClipSpec
from maskmine.transforms.masked_crop import MASK_THRESHOLD
from maskmine.transforms.proposals.factory import ProposalSpec, build_proposal_generator
from maskmine.transforms.proposals.sam import TINY_MODEL_TYPE
from maskmine.transforms.records import ImageRecord

log = logging.getLogger(__name__)

NO_CLASS = 65535
FORM_OVERHEAD = 64 * 1024  # the text fields and multipart boundaries around the image
DRAIN_FACTOR = 32  # bodies up to this many times the limit are read and dropped, so the browser sees the message


class DemoInputError(Exception):
    """Bad input from the page; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DemoConfig:
    clip: ClipSpec = field(default_factory=ClipSpec)  # pretrained None: the model's default
    adapted: Optional[str] = None  # a `maskmine train` run: its adapted CLIP instead of ``clip``
    maskformer: ProposalSpec = field(default_factory=lambda: ProposalSpec(backend="maskformer"))
    sam: ProposalSpec = field(default_factory=lambda: ProposalSpec(backend="sam"))  # offered when loadable
    device: str = "auto"  # where every model runs (the specs' own device fields are not used)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 12_000_000
    max_classes: int = 100
    default_classes: str = "person, dog, cat, car, tree, grass, sky, road, building, water"
    default_granularity: float = SAM_GRANULARITY
    mask_threshold: Optional[float] = None  # a proposal's pixels: mask > this; None: the inference's own (0.4 / 0.35)
    read_timeout: float = 30.0  # seconds for any socket read, and for a whole request body
    max_queue: int = 4  # requests that may wait while one segmentation runs; more get 503
    queue_timeout: float = 300.0  # seconds a request waits for its turn before 503
    retry_after: int = 5  # seconds a 503 answer asks the client to wait (Retry-After)
    max_connections: int = 32  # connections served at once; more wait in the listen queue
    backlog: int = 128  # the listen queue: connections accepted by the kernel, not yet served
    inference: str = "maskmine"  # MaskFormer's masks: "maskmine" (eval's inference) or "ovseg-demo"
    test_size: Optional[int] = None  # OVSeg's test size: the image's short side resized to this first


@dataclass
class LegendEntry:
    name: str
    colour: str  # "#rrggbb"
    fraction: float  # of the image's pixels


@dataclass
class DemoResult:
    overlay_png: bytes
    legend: list[LegendEntry]
    width: int
    height: int
    proposals: int
    backend: str
    granularity: Optional[float]
    seconds: float
    uncovered: float  # fraction of pixels no class claimed
    inference: str = ""  # in words: which inference painted the picture, at which size


def parse_classes(text: str, max_classes: int) -> list[str]:
    """Comma-separated names → list; empty entries dropped, duplicates refused."""
    names = [" ".join(part.split()) for part in (text or "").split(",")]
    names = [n for n in names if n]
    if not names:
        raise DemoInputError("Enter at least one class name (comma-separated, e.g. 'cat, dog, sofa').")
    if len(names) > max_classes:
        raise DemoInputError(f"{len(names)} class names given; the limit is {max_classes}.")
    long = [n for n in names if len(n) > 60]
    if long:
        raise DemoInputError(f"Class name too long (60 characters at most): {long[0][:60]}...")
    seen: set[str] = set()
    for n in names:
        if n.lower() in seen:
            raise DemoInputError(f"Class name {n!r} is given twice.")
        seen.add(n.lower())
    return names


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def decode_upload(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Uploaded file → (H, W, 3) uint8 RGB, or DemoInputError saying what is wrong."""
    if not data:
        raise DemoInputError("Choose an image file to upload.")
    if len(data) > max_bytes:
        raise DemoInputError(
            f"Image too large: {_megabytes(len(data))} uploaded, the limit is {_megabytes(max_bytes)}.",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise DemoInputError(
                    f"Image too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                    f"the limit is {max_pixels / 1e6:.1f} megapixels.",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except DemoInputError:
        raise
    except UnidentifiedImageError as exc:
        raise DemoInputError("The file is not an image this page can read (JPEG, PNG, WebP, ...).") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DemoInputError(f"The image file is damaged or truncated ({exc}).") from exc


def demo_mask_threshold(ovseg_demo: bool, given: Optional[float]) -> float:
    """The threshold a demo inference binarises masks at: ``given``, else its own default (OVSeg's
    demo config 0.35 for OVSeg's demo inference, OVSeg's MASK_THR 0.4 for maskmine's)."""
    if given is not None:
        return given
    return OVSEG_DEMO_MASK_THRESHOLD if ovseg_demo else DEFAULT_MASK_THRESHOLD


def demo_labels(image: np.ndarray, names: list[str], proposals: Any, classifier: RegionClassifier,
                granularity: Optional[float], mask_threshold: Optional[float] = None, *,
                inference: str = "maskmine", output_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """The demo's label map (``NO_CLASS`` where nothing is painted), at ``output_size`` if given
    (``image`` is then a resized copy: see :mod:`maskmine.eval.shortest_edge`); masks are binarised
    ``> mask_threshold`` (None: the inference's own, 0.4 or OVSeg's demo 0.35).

    One class name: as OVSeg's demo (``OVSegDEMO.forward``), "others" is added so the softmax
    has an alternative (a lone class would get probability 1 on every mask and paint the whole
    image). ``inference="maskmine"`` (or any ``granularity``): pixels where "others" wins are left
    unpainted and kept out of the legend. ``inference="ovseg-demo"`` (no granularity): OVSeg's demo
    inference (:func:`maskmine.eval.ovseg_demo.segment_ovseg_demo`), "others" is a label like the
    names (id ``len(names)``).
    """
    classify_names = demo_class_names(names)
    if inference not in DEMO_INFERENCES:
        raise ValueError(f"unknown demo inference {inference!r}; choose from {DEMO_INFERENCES}")
    ovseg_demo = inference == "ovseg-demo" and granularity is None
    threshold = demo_mask_threshold(ovseg_demo, mask_threshold)
    if ovseg_demo:
        return segment_ovseg_demo(image, classify_names, proposals, classifier, blank_label=NO_CLASS,
                                  mask_threshold=threshold, output_size=output_size).labels
    result = segment(image, classify_names, proposals, classifier, granularity=granularity,
                     empty_label=NO_CLASS, output_size=output_size, mask_threshold=threshold)
    labels = result.labels
    if len(classify_names) > len(names):
        labels = np.where(labels >= len(names), NO_CLASS, labels)
    return labels


class DemoApp:
    """Models loaded once; ``run`` turns one form submission into a result (thread-safe)."""

    def __init__(self, config: DemoConfig, classifier: Optional[RegionClassifier] = None) -> None:
        MASK_THRESHOLD.check("mask_threshold", config.mask_threshold)
        ranges.POSITIVE_INT.check("test_size", config.test_size)
        self.config = config
        if config.inference not in DEMO_INFERENCES:
            raise UserError(f"unknown demo inference {config.inference!r}; choose from {', '.join(DEMO_INFERENCES)}")
        self.device = resolve_device(config.device)
        self.classifier = classifier or build_classifier(replace(config.clip, device=str(self.device)), config.adapted)
        self._lock = threading.Lock()  # one segmentation at a time
        self._queue_lock = threading.Lock()
        self._waiting = 0  # requests waiting for ``_lock``
        self._generators: dict[str, Any] = {}
        self.backends: dict[str, str] = {"maskformer": "MaskFormer"}
        self.unavailable: dict[str, str] = {}
        self._generators["maskformer"] = build_proposal_generator(replace(config.maskformer, device=str(self.device)))
        reason = self._sam_unavailable()
        if reason:
            self.unavailable["sam"] = reason
        else:
            self._generators["sam"] = build_proposal_generator(replace(config.sam, device=str(self.device)))
            self.backends["sam"] = "SAM"

    def _sam_unavailable(self) -> str:
        import importlib.util

        if importlib.util.find_spec("segment_anything") is None:
            return "SAM needs the segment-anything package (pip install 'maskmine[sam]')"
        if not self.config.sam.checkpoint and self.config.sam.sam_model_type != TINY_MODEL_TYPE:
            return "SAM needs `sam_checkpoint` (a SAM .pth file)"
        return ""

    def parse_granularity(self, text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise DemoInputError(f"Granularity must be a number between 0 and 1, got {text!r}.") from None
        if not 0.0 <= value <= 1.0:
            raise DemoInputError(f"Granularity must be between 0 and 1, got {value:g}.")
        return value

    @contextlib.contextmanager
    def _turn(self):
        """Hold the one segmentation slot; DemoInputError(503) when the queue is full or the wait too long."""
        busy = "The server is busy segmenting other images; try again in a moment."
        with self._queue_lock:
            if self._lock.locked() and self._waiting >= self.config.max_queue:
                raise DemoInputError(busy, HTTPStatus.SERVICE_UNAVAILABLE)
            self._waiting += 1
        try:
            got = self._lock.acquire(timeout=self.config.queue_timeout)
        finally:
            with self._queue_lock:
                self._waiting -= 1
        if not got:
            raise DemoInputError(busy, HTTPStatus.SERVICE_UNAVAILABLE)
        try:
            yield
        finally:
            self._lock.release()

    def run(self, image_bytes: bytes, classes_text: str, backend: str, granularity_text: str) -> DemoResult:
        cfg = self.config
        if backend not in self._generators:
            why = self.unavailable.get(backend, "")
            raise DemoInputError(f"Proposal model {backend!r} is not available{': ' + why if why else ''}.")
        names = parse_classes(classes_text, cfg.max_classes)
        granularity = self.parse_granularity(granularity_text) if backend == "sam" else None
        image = decode_upload(image_bytes, cfg.max_upload_bytes, cfg.max_pixels)
        started = time.monotonic()
        ovseg = cfg.inference == "ovseg-demo" and backend == "maskformer"
        work, output_size = at_test_size(image, cfg.test_size)  # OVSeg's predictor; scores back to this size
        threshold = demo_mask_threshold(ovseg, cfg.mask_threshold)
        with self._turn():
            if backend == "maskformer":  # every query's soft mask, as the eval's semantic inference
                proposals, _ = maskformer_eval_proposals(self._generators[backend], work, mask_threshold=threshold)
            else:
                record = ImageRecord(0, "upload", work.shape[1], work.shape[0], [])
                proposals = self._generators[backend].generate([work], [record])[0]
            labels = demo_labels(work, names, proposals, self.classifier, granularity, threshold,
                                 inference="ovseg-demo" if ovseg else "maskmine", output_size=output_size)
        shown = demo_class_names(names) if ovseg else names  # OVSeg's demo paints "others" too
        colours = colour_table(range(len(shown)))
        ids, counts = np.unique(labels, return_counts=True)
        total = float(labels.size)
        legend = [
            LegendEntry(shown[int(c)], hex_colour(colours[int(c)]), float(n) / total)
            for c, n in sorted(zip(ids, counts), key=lambda cn: -cn[1])
            if 0 <= c < len(shown)
        ]
        buf = io.BytesIO()
        Image.fromarray(overlay(image, labels, colours)).save(buf, format="PNG")
        return DemoResult(
            overlay_png=buf.getvalue(),
            legend=legend,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            proposals=len(proposals),
            backend=self.backends[backend],
            granularity=granularity,
            seconds=time.monotonic() - started,
            uncovered=float((labels == NO_CLASS).sum()) / total,
            inference=self.describe_inference(backend, image.shape[:2], work.shape[:2], threshold),
        )

    def describe_inference(self, backend: str, size: tuple[int, ...], work: tuple[int, ...], threshold: float) -> str:
        """One line for the page: which inference painted the picture, and at which size."""
        if backend != "maskformer":
            what = "SAM granularity fusion"
        elif self.config.inference == "ovseg-demo":
            what = (f"OVSeg's demo inference (masks at {threshold:g}, the best mask per "
                    "class, \u201cothers\u201d painted)")
        else:
            what = (f"maskmine's evaluation inference (soft masks, threshold {threshold:g}, "
                    "every mask, \u201cothers\u201d unpainted)")
        if tuple(work) == tuple(size):
            where = "at the image's own size" + ("" if self.config.test_size else f" (OVSeg: short side {OVSEG_MIN_SIZE_TEST})")
        else:
            where = (f"at {work[1]}x{work[0]} (short side {self.config.test_size}, as OVSeg's test size), "
                     f"scores interpolated back to {size[1]}x{size[0]}")
        return f"{what}, {where}"



@dataclass
class FormState:
    classes: str
    backend: str = "maskformer"
    granularity: str = f"{SAM_GRANULARITY:g}"
    extra: dict[str, str] = field(default_factory=dict)


PAGE_DIR = Path(__file__).resolve().parent / "demo_page"  # demo.html and demo.css


@lru_cache(maxsize=1)
def _page_template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PAGE_DIR), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    return env.get_template("demo.html")


def render_page(app: DemoApp, form: FormState, result: Optional[DemoResult] = None,
                error: Optional[str] = None) -> str:
    """The whole page (``demo_page/demo.html``, autoescaped): form (keeping the user's values),
    then the error or the result."""
    cfg = app.config
    return _page_template().render(
        clip_name=app.classifier.clip.name,
        clip_pretrained=app.classifier.clip.pretrained,
        max_upload=_megabytes(cfg.max_upload_bytes),
        max_megapixels=f"{cfg.max_pixels / 1e6:.1f}",
        max_classes=cfg.max_classes,
        inference=cfg.inference,
        test_size=cfg.test_size,
        form=form,
        backends=[(key, label, key in app.backends) for key, label in (("maskformer", "MaskFormer"), ("sam", "SAM"))],
        sam_note=app.unavailable.get("sam", ""),
        error=error,
        result=result,
        overlay_b64=base64.b64encode(result.overlay_png).decode("ascii") if result is not None else "",
    )


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """multipart/form-data body → {field name: raw bytes} (files and text fields alike)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise DemoInputError("The form must be sent as multipart/form-data.")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise DemoInputError("Could not read the submitted form.")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part.get_payload(decode=True) or b""
    return fields


def make_handler(app: DemoApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "maskmine-demo"
        timeout = app.config.read_timeout  # socketserver applies it to every read of the connection

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, body: str, close: bool = False) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            if status == HTTPStatus.SERVICE_UNAVAILABLE:
                self.send_header("Retry-After", str(app.config.retry_after))
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _default_form(self) -> FormState:
            return FormState(classes=app.config.default_classes, granularity=f"{app.config.default_granularity:g}")

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html", "/segment"):
                self._send(HTTPStatus.OK, render_page(app, self._default_form()))
            elif path == "/health":
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            else:
                self._send(HTTPStatus.NOT_FOUND, render_page(app, self._default_form(), error=f"No page {path}."))

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            form = self._default_form()
            limit = app.config.max_upload_bytes + FORM_OVERHEAD
            try:
                if self.path.split("?", 1)[0] != "/segment":
                    raise DemoInputError(f"No form handler at {self.path}.", HTTPStatus.NOT_FOUND)
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise DemoInputError("The upload has no length.", HTTPStatus.LENGTH_REQUIRED) from None
                if length > limit:
                    self._drain(length, limit)
                    raise DemoInputError(
                        f"Upload too large: {_megabytes(length)} sent, the image limit is "
                        f"{_megabytes(app.config.max_upload_bytes)}.",
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    )
                fields = parse_multipart(self.headers.get("Content-Type", ""), self._read_body(length))
                form.classes = fields.get("classes", b"").decode("utf-8", "replace")
                form.backend = fields.get("proposals", b"maskformer").decode("utf-8", "replace")
                form.granularity = fields.get("granularity", b"").decode("utf-8", "replace") or form.granularity
                result = app.run(fields.get("image", b""), form.classes, form.backend, form.granularity)
            except DemoInputError as exc:
                self._send(exc.status, render_page(app, form, error=str(exc)), close=exc.status >= 408)
                return
            except UserError as exc:
                self._send(HTTPStatus.BAD_REQUEST, render_page(app, form, error=str(exc)))
                return
            except Exception:  # noqa: BLE001 - the page must never show a stack trace
                log.exception("demo request failed")
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR,
                           render_page(app, form, error="Internal error while segmenting; see the server log."))
                return
            self._send(HTTPStatus.OK, render_page(app, form, result=result))

        def _read_body(self, length: int) -> bytes:
            """The request body, whole within ``read_timeout`` seconds, else DemoInputError(408)."""
            deadline = time.monotonic() + app.config.read_timeout
            chunks, left = [], length
            try:
                while left > 0:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    chunk = self.rfile.read1(min(left, 1 << 16))  # what has arrived, at most one timed-out recv
                    if not chunk:
                        raise DemoInputError("The upload ended before its announced length.", HTTPStatus.BAD_REQUEST)
                    chunks.append(chunk)
                    left -= len(chunk)
            except (TimeoutError, OSError):  # socket.timeout is a TimeoutError
                raise DemoInputError(
                    f"The upload did not arrive within {app.config.read_timeout:g} s "
                    f"({length - left} of {length} bytes).", HTTPStatus.REQUEST_TIMEOUT,
                ) from None
            return b"".join(chunks)

        def _drain(self, length: int, limit: int) -> None:
            """Read and drop an oversized body (bounded), so the browser gets our answer, not a reset."""
            if length > limit * DRAIN_FACTOR:
                self.close_connection = True
                return
            left = length
            deadline = time.monotonic() + app.config.read_timeout
            try:
                while left > 0 and time.monotonic() < deadline:
                    chunk = self.rfile.read1(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
            except (TimeoutError, OSError):  # the client stopped sending: answer anyway, then close
                pass
            if left > 0:
                self.close_connection = True

    return Handler


class DemoServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; a listen queue of ``backlog``.

    When every slot is taken the accept loop waits for one, so further clients
    queue in the kernel's listen backlog instead of being reset.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], backlog: int,
                 max_connections: int) -> None:
        self.request_queue_size = backlog  # read by server_activate's listen()
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """A bound server (``port=0`` picks a free one: see ``server.server_address``)."""
    try:
        return DemoServer((host, port), make_handler(app), app.config.backlog, app.config.max_connections)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
