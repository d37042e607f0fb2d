"""``maskmine demo``: serve the open-vocabulary segmentation page locally."""
from __future__ import annotations

import argparse

from maskmine.eval.settings import (
    DEFAULT_MASK_THRESHOLD,
    DEMO_INFERENCES,
    OVSEG_DEMO_MASK_THRESHOLD,
    OVSEG_MIN_SIZE_TEST,
    SAM_GRANULARITY,
)
from maskmine.pipelines.cli_options import (
    FRACTION,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_adapted_argument,
    add_clip_arguments,
    add_device_argument,
    add_mask_threshold_argument,
    add_proposal_arguments,
    add_sam_filter_arguments,
    add_test_size_argument,
    clip_spec,
    flag_words,
    number,
    proposal_spec,
    sam_options,
    settings,
)

DESCRIPTION = """\
Upload an image, type class names separated by commas, pick the proposal model
(MaskFormer, or SAM with its granularity slider) and get the coloured
segmentation with a legend. Binds 127.0.0.1 by default (this machine only).
With a single class name, "others" is added as OVSeg's demo does; pixels where
it wins are left unpainted (painted and labelled with --inference ovseg-demo,
OVSeg's demo inference; add --test-size 640 for OVSeg's demo image size).

examples:
  maskmine demo --clip-model ViT-B-16 --clip-pretrained openai \\
      --sam-checkpoint sam_vit_h.pth --port 7860
  maskmine demo --proposal-checkpoint sample --clip-model sample \\
      --classes "sky, grass, house, tree, circle"            # offline: the sample-world models
  maskmine demo --proposal-checkpoint maskmine-tiny --sam-model-type maskmine-tiny \\
      --clip-model maskmine-tiny --clip-pretrained none      # tiny random models: plumbing only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the page to the network)")
    parser.add_argument("--port", type=number(int, 0, 65535), default=7860, help="port (default 7860; 0 = any free port)")
    add_clip_arguments(parser)
    add_adapted_argument(parser)
    add_proposal_arguments(parser, backends=None)
    parser.add_argument("--sam-checkpoint", default="", metavar="PTH",
                        help="SAM .pth file; without it SAM is offered only with --sam-model-type maskmine-tiny")
    add_sam_filter_arguments(parser)
    add_mask_threshold_argument(parser, "demo")
    parser.add_argument("--granularity", type=FRACTION, default=SAM_GRANULARITY, metavar="G",
                        help=f"the slider's starting value (default {SAM_GRANULARITY:g})")
    parser.add_argument("--inference", choices=DEMO_INFERENCES, default="maskmine",
                        help="how MaskFormer's masks are painted: 'maskmine' = eval's inference (soft masks at "
                             f"{DEFAULT_MASK_THRESHOLD:g}, every mask; with one class, 'others' pixels unpainted) "
                             f"(default); 'ovseg-demo' = OVSeg's demo (masks at {OVSEG_DEMO_MASK_THRESHOLD:g}, each "
                             f"class's best mask, 'others' painted); with --test-size {OVSEG_MIN_SIZE_TEST}, OVSeg's "
                             "demo inference at its image size. The page says which made the picture")
    add_test_size_argument(parser)
    parser.add_argument("--classes", default=None,
                        help="the class field's starting text (comma-separated)")
    parser.add_argument("--max-upload-mb", type=POSITIVE_FLOAT, default=10.0, metavar="MB",
                        help="largest accepted image file (default 10)")
    parser.add_argument("--max-megapixels", type=POSITIVE_FLOAT, default=12.0, metavar="MP",
                        help="largest accepted image size in megapixels (default 12)")
    parser.add_argument("--max-classes", type=POSITIVE_INT, default=100, metavar="N",
                        help="most class names per request (default 100)")
    parser.add_argument("--read-timeout", type=POSITIVE_FLOAT, default=30.0, metavar="S",
                        help="seconds for any read from a client, and for a whole upload to arrive (default 30)")
    parser.add_argument("--max-queue", type=NON_NEGATIVE_INT, default=4, metavar="N",
                        help="one image is segmented at a time; at most N requests wait, more get "
                             "'busy, try again' (503, Retry-After 5 s) at once (default 4)")
    parser.add_argument("--max-connections", type=POSITIVE_INT, default=32, metavar="N",
                        help="connections served at once; more wait in the listen queue (128 deep) "
                             "instead of being reset (default 32)")
    add_device_argument(parser)


def config_from_args(args: argparse.Namespace) -> "DemoConfig":
    """The demo's settings of the parsed flags."""
    from maskmine.eval.demo import DemoConfig

    config = settings(
        DemoConfig, args,
        clip=clip_spec(args),
        maskformer=proposal_spec(args, backend="maskformer", sam_model_type="vit_h"),
        sam=proposal_spec(args, backend="sam", checkpoint=args.sam_checkpoint, sam=sam_options(args)),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        default_granularity=args.granularity,
    )
    if args.classes is not None:
        config.default_classes = args.classes
    return config


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from maskmine.eval.demo import DemoApp, make_server

    config = config_from_args(args)
    app = DemoApp(config)
    # why a proposal model is unavailable, as the page shows it: the settings it names as this command's flags
    app.unavailable = {backend: flag_words(args._parser, why) for backend, why in app.unavailable.items()}
    server = make_server(app, args.host, args.port)
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the page")
    print(f"maskmine demo: open http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/  (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
