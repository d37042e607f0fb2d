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


@pytest.mark.parametrize("resample, strategy", [("torch", "loop"), ("torch", "batched"), ("pil", "auto")])
def test_out_receives_the_crops_bit_for_bit(resample, strategy):
    """Crops written into a caller's (K, 3, S, S) tensor are the crops cut without one, row by row."""
    from maskmine.transforms.masked_crop import masked_crops

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    masks = rng.random((4, 45, 70)) > 0.7
    config = CropConfig(input_size=24, resample=resample)
    alone = masked_crops(image, masks, config, strategy=strategy)
    out = torch.full((4, 3, 24, 24), float("nan"))
    written = masked_crops(image, masks, config, strategy=strategy, out=out)
    for k, (a, w) in enumerate(zip(alone, written)):
        assert torch.equal(out[k], a.clip_input) and torch.equal(w.clip_input, a.clip_input)
        assert w.clip_input.data_ptr() == out[k].data_ptr()  # a view of the caller's row, not a copy
        assert np.array_equal(w.mask, a.mask) and w.box == a.box
    with pytest.raises(ValueError, match=r"out must be \(4, 3, 24, 24\) float32"):
        masked_crops(image, masks, config, out=torch.zeros((3, 3, 24, 24)))
    with pytest.raises(ValueError, match="float32"):
        masked_crops(image, masks, config, out=torch.zeros((4, 3, 24, 24), dtype=torch.float64))


def test_matched_crops_keep_their_own_pixels():
    """The crops kept after matching hold only their own CLIP input, not the image's whole (K, 3, S, S) tensor."""
    from maskmine.transforms.masked_crop import masked_crops
    from maskmine.transforms.pairing import ImageMatches, matched_crops
    from maskmine.transforms.records import Match

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    masks = rng.random((5, 30, 40)) > 0.5
    out = torch.empty((5, 3, 16, 16))
    crops = masked_crops(image, masks, CropConfig(input_size=16), out=out)
    matched = ImageMatches(names=["cat", "dog"], matches=[Match("cat", 3, 0.3, 0.6, 0.1), Match("dog", 1, 0.2, 0.5, None)],
                           caption_ids=[[0], [0]], captions=[["a cat"], ["a dog"]])
    kept = matched_crops(matched, crops)
    assert sorted(kept) == [1, 3]
    for index, crop in kept.items():
        assert torch.equal(crop.clip_input, out[index])
        assert crop.clip_input.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
        assert crop.clip_input.untyped_storage().nbytes() == 3 * 16 * 16 * 4


@pytest.mark.parametrize("changes, setting, problem", [
    ({"expand_ratio": 0.5}, "crop_expand", "must be >= 1 and <= 10, got 0.5"),
    ({"threshold": 1.0}, "mask_threshold", "must be >= 0 and < 1, got 1.0"),
    ({"input_size": 0}, "crop_input_size", "must be >= 1, got 0"),
    ({"fill": "grey"}, "crop_fill", "must be one of mean, zero, got 'grey'"),
    ({"resize": 32}, "crop_resize", "must be one of stretch, pad, got 32"),
    ({"resample": "nearest"}, "crop_resample", "must be one of torch, pil, got 'nearest'"),
    ({"mean": (0.5, 0.5)}, "crop_mean", "must be 3 numbers (R, G, B), got 2"),
    ({"std": (0.2, 0.0, 0.2)}, "crop_std", "must be > 0, got 0.0"),
])
def test_a_crop_config_refuses_what_its_flags_refuse_however_it_is_made(changes, setting, problem):
    """One range each: a CropConfig from code, a run.json or a checkpoint is refused as the flag's setting."""
    from maskmine.transforms.errors import SettingError

    with pytest.raises(SettingError) as refused:
        CropConfig(**changes)
    assert (refused.value.setting, refused.value.problem) == (setting, problem)
    assert "--" not in str(refused.value)


def test_the_crop_flags_defaults_and_ranges_are_the_crop_configs(capsys):
    from maskmine.pipelines.cli import main
    from maskmine.pipelines.cli_options import add_crop_arguments, add_mask_threshold_argument, crop_config
    import argparse

    parser = argparse.ArgumentParser()
    add_crop_arguments(parser)
    add_mask_threshold_argument(parser, "mine")
    assert crop_config(parser.parse_args([])) == CropConfig()
    capsys.readouterr()
    assert main(["mine", "--captions", "c", "--images", "i", "--out", "o", "--crop-expand", "0.5"]) == 2
    assert "argument --crop-expand: must be >= 1 and <= 10, got 0.5" in capsys.readouterr().err
