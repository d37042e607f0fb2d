"""Training as OVSeg's open_clip_training does it, checked against open_clip's and torchvision's own code:
ClipLoss for --loss clip-plain, RandomResizedCrop for the augmentation, the logit_scale clamp."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from open_clip.loss import ClipLoss
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from maskmine.finetune.augment import random_resized_crop
from maskmine.finetune.data import Batch
from maskmine.finetune.model import MaskPromptCLIP
from maskmine.finetune.train import LOSS_TEMPLATES, batch_loss
from maskmine.transforms.clip_models import load_clip


def test_clip_plain_is_open_clips_clip_loss_on_one_text_per_crop() -> None:
    clip = load_clip("maskmine-tiny", "none")
    model = MaskPromptCLIP(clip.model, mode="full")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(6, 3, 64, 64, generator=gen)
    labels = torch.tensor([0, 1, 2, 1, 3, 0])  # nouns repeat: OVSeg's ClipLoss still counts them as negatives
    batch = Batch(pixels=pixels, masks=torch.ones(6, 64, 64, dtype=torch.bool), labels=labels,
                  nouns=["a"] * 6, keys=[str(i) for i in range(6)])
    text_table = torch.nn.functional.normalize(torch.randn(4, 32, generator=gen), dim=-1)
    got = batch_loss("clip-plain", model, batch, text_table, torch.device("cpu"))
    with torch.no_grad():
        image = model.encode_image(pixels)
    expected = ClipLoss()(image, text_table[labels], model.logit_scale)
    torch.testing.assert_close(got, expected)
    assert LOSS_TEMPLATES["clip-plain"] == ("{}",)  # OVSeg's text: the caption as it is (training/data.py line 52)


def test_augmentation_is_torchvisions_random_resized_crop_and_moves_the_mask_along() -> None:
    rng_np = np.random.default_rng(0)
    pixels = rng_np.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, :32] = True
    for seed in range(5):
        seed_for_sample = random.Random(seed).getrandbits(63)
        torch.manual_seed(seed_for_sample)
        reference = RandomResizedCrop(64, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC)
        expected = np.asarray(reference(Image.fromarray(pixels)))
        got, got_mask = random_resized_crop(pixels, mask, 64, (0.9, 1.0), random.Random(seed))
        np.testing.assert_array_equal(got, expected)
        assert got_mask.shape == (64, 64) and got_mask[:, :20].all() and not got_mask[:, 44:].any()


def test_logit_scale_is_clamped_at_ln_100_after_a_step() -> None:
    clip = load_clip("maskmine-tiny", "none")
    model = MaskPromptCLIP(clip.model, mode="prompt")
    with torch.no_grad():
        clip.model.logit_scale.fill_(5.0)
    model.clamp_logit_scale()
    assert clip.model.logit_scale.item() == torch.tensor(math.log(100)).item()  # float32 ln 100
    with torch.no_grad():
        clip.model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert clip.model.logit_scale.item() == 0.0
