"""ShardWriter on its own: tar members, the Parquet row of each pair, the manifest, and abort."""
import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest

from maskmine.transforms.records import METADATA_FIELDS, ImageResult, PairSample, pair_columns
from maskmine.transforms.run_folder import manifest_name, parquet_name, tar_name
from maskmine.transforms.shards import PARQUET_SCHEMA, ShardManifest, ShardWriter, completed_shards, read_shard_pairs


def _pair(image_id: int, noun: str) -> PairSample:
    return PairSample(
        key=f"{image_id}-{noun}", image_id=image_id, file_name=f"{image_id}.jpg", noun=noun, caption_ids=[7],
        captions=[f"a {noun} here"], proposal_index=0, box=[1, 2, 3, 4], mask_rle="abc", height=8, width=9, score=0.5, probability=0.75,  # float32-exact: Parquet stores float32
        margin=None, proposal_backend="coco-gt", proposal_checkpoint="", clip_model="m", clip_pretrained="p",
        label_source="caption", crop_jpg=b"jpg-" + noun.encode(), crop_mask_png=b"png",
    )


def _result(image_id: int, *nouns: str) -> ImageResult:
    return ImageResult(image_id=image_id, file_name=f"{image_id}.jpg", shard=0, status="mined",
                       pairs=[_pair(image_id, n) for n in nouns])


def test_a_shard_is_tar_then_parquet_then_manifest(tmp_path):
    writer = ShardWriter(str(tmp_path), 3)
    writer.add(_result(10, "dog", "cat"))
    writer.add(ImageResult(image_id=11, file_name="11.jpg", shard=0, status="skipped", reason="corrupt-image"))
    manifest = writer.close()

    assert (manifest.shard, manifest.samples, manifest.images, manifest.mined) == (3, 2, 2, 1)
    assert manifest.skipped == {"corrupt-image": 1} and manifest.nouns == {"cat": 1, "dog": 1}
    assert ShardManifest.from_json((tmp_path / manifest_name(3)).read_bytes()) == manifest
    assert completed_shards(str(tmp_path)) == {3: manifest}
    data = (tmp_path / tar_name(3)).read_bytes()
    assert len(data) == manifest.tar_bytes

    table = pq.read_table(tmp_path / parquet_name(3))
    assert table.schema.names == PARQUET_SCHEMA.names
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == ["10-cat", "10-dog"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for row in rows:  # the byte span of a row holds exactly its sample's members
            span = data[row["tar_offset"] : row["tar_offset"] + row["tar_size"]]
            with tarfile.open(fileobj=io.BytesIO(span + b"\0" * 1024)) as sample:
                names = sample.getnames()
            assert names == [f"{row['key']}{s}" for s in (".jpg", ".mask.png", ".txt", ".json")]
            meta = json.loads(tar.extractfile(f"{row['key']}.json").read())
            assert {k: v for k, v in row.items() if k in meta} == meta  # one schema: the same names and values
            assert tar.extractfile(f"{row['key']}.txt").read().decode() == f"a photo of a {row['noun']}."
    assert read_shard_pairs(str(tmp_path), 3)[10] == _result(10, "cat", "dog").pairs


def test_abort_leaves_no_file(tmp_path):
    writer = ShardWriter(str(tmp_path), 0)
    writer.add(_result(1, "dog"))
    writer.abort()
    assert list(tmp_path.rglob("*")) == []


def test_images_must_arrive_in_order(tmp_path):
    writer = ShardWriter(str(tmp_path), 0)
    writer.add(_result(2, "dog"))
    with pytest.raises(ValueError, match="out of order or twice"):
        writer.add(_result(2, "dog"))
    writer.abort()


def test_the_pair_schema_has_one_definition():
    """json keys, Parquet columns and their types all come from PairSample's column() fields."""
    meta = _pair(1, "dog").metadata()
    assert list(meta) == list(METADATA_FIELDS)
    assert "crop_jpg" not in meta and "crop_mask_png" not in meta
    parquet_pair_columns = [n for n in PARQUET_SCHEMA.names if n not in {"shard", "tar_offset", "tar_size"}]
    assert parquet_pair_columns == [n for n, _ in pair_columns()]
    assert parquet_pair_columns == list(meta)
    assert str(PARQUET_SCHEMA.field("score").type) == "float" and str(PARQUET_SCHEMA.field("caption_ids").type) == "list<item: int64>"


def test_the_txt_member_is_the_caption_template_filled_with_the_noun(tmp_path):
    from maskmine.transforms.shard_format import check_caption_template, read_samples

    writer = ShardWriter(str(tmp_path), 0, caption_template="{noun}")  # the bare noun, as runs before the template
    writer.add(_result(1, "dog"))
    writer.close()
    members = read_samples((tmp_path / tar_name(0)).read_bytes())["1-dog"]
    assert members["txt"] == b"dog" and json.loads(members["json"])["captions"] == ["a dog here"]
    assert check_caption_template("an image of the {noun}") == "an image of the {noun}"
    for bad in ("a photo", "a {noun} and {other}", "{0} {noun}", "a {noun"):
        with pytest.raises(ValueError):
            check_caption_template(bad)


def test_a_shard_cut_at_a_header_reads_as_broken(tmp_path):
    from maskmine.transforms.shard_format import ShardReadError, iter_members

    writer = ShardWriter(str(tmp_path), 0)
    writer.add(_result(1, "cat", "dog"))
    writer.close()
    data = (tmp_path / tar_name(0)).read_bytes()
    first_end = [m.end for m in iter_members(data)][3]  # the first sample's last member
    with pytest.raises(ShardReadError, match="end-of-archive"):
        list(iter_members(data[: first_end + 100]))  # tarfile alone stops quietly there
