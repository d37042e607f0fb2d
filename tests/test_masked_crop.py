import numpy as np
import pytest
import torch

from maskmine.transforms.masked_crop import CropConfig, expand_box, mask_box, masked_crop, to_clip_tensor


def scene():
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = 200  # red everywhere
    image[10:20, 30:50] = (0, 255, 0)  # a green 10x20 object
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:50] = True
    return image, mask


def test_tight_box_and_stretch_fill_mean():
    image, mask = scene()
    crop = masked_crop(image, mask, CropConfig(input_size=32))
    assert crop.box == (30, 10, 20, 10)
    assert crop.pixels.shape == (32, 32, 3) and crop.pixels.dtype == np.uint8
    # the tight box holds only the object, so the stretched crop is all green and all mask
    assert crop.mask.all()
    assert (crop.pixels[..., 1] > 240).all() and (crop.pixels[..., 0] < 15).all()


def test_background_inside_box_is_mean_pixel_and_normalises_to_zero():
    image, mask = scene()
    mask[10:20, 40:50] = False  # keep the left half only; the box shrinks to it
    mask[15, 45] = True  # one pixel on the right widens the box again
    crop = masked_crop(image, mask, CropConfig(input_size=20, resize="stretch"))
    assert crop.box == (30, 10, 16, 10)
    background = ~crop.mask
    assert background.any()
    mean_pixel = np.round(np.asarray(CropConfig.mean) * 255).astype(np.uint8)
    # bicubic resizing blends the object's edge into its neighbours; away
    # from the edge (two columns off the object, rows away from the single right-hand pixel) the
    # background is exactly the mean pixel
    far = np.zeros_like(background)
    far[:7, 14:] = True
    assert background[far].all()
    assert (crop.pixels[far] == mean_pixel).all()
    normalised = to_clip_tensor([crop.pixels], CropConfig(input_size=20))
    assert normalised[0][:, torch.from_numpy(far)].abs().max() < 0.01


def test_zero_fill_and_pad_keeps_aspect():
    image, mask = scene()
    crop = masked_crop(image, mask, CropConfig(input_size=20, fill="zero", resize="pad"))
    # a 20x10 box padded to 20x20: the object fills the middle 10 rows
    assert crop.mask.sum() == 20 * 10
    assert crop.mask[5:15].all() and not crop.mask[:5].any() and not crop.mask[15:].any()
    assert (crop.pixels[:5] == 0).all()


def test_expand_ratio_grows_box_within_image():
    assert expand_box((30, 10, 20, 10), 2.0, 60, 40) == (20, 5, 40, 20)
    assert expand_box((0, 0, 10, 10), 3.0, 20, 20) == (0, 0, 20, 20)
    image, mask = scene()
    crop = masked_crop(image, mask, CropConfig(input_size=40, expand_ratio=2.0))
    assert crop.box == (20, 5, 40, 20)
    assert 0.2 < crop.mask.mean() < 0.3  # the object is a quarter of the doubled box


def test_soft_mask_threshold_and_errors():
    image, mask = scene()
    soft = mask.astype(np.float32) * 0.6
    assert masked_crop(image, soft, CropConfig(input_size=8, threshold=0.5)).box == (30, 10, 20, 10)
    with pytest.raises(ValueError, match="empty"):
        masked_crop(image, soft, CropConfig(input_size=8, threshold=0.7))
    # strictly above the threshold, as OVSeg's ``mask > MASK_THR``: a pixel at exactly 0.5 is out at 0.5
    half = mask.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match="empty"):
        masked_crop(image, half, CropConfig(input_size=8, threshold=0.5))
    assert masked_crop(image, half, CropConfig(input_size=8, threshold=0.4)).box == (30, 10, 20, 10)
    with pytest.raises(ValueError, match="does not match"):
        masked_crop(image, mask[:10], CropConfig(input_size=8))
    assert mask_box(mask) == (30, 10, 20, 10)
