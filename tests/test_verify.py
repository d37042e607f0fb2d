"""maskmine verify: passes a good run, names each kind of damage."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import MineConfig, run_mining
from maskmine.transforms.verify_run import verify_run
from mining_helpers import coco_mini_config


def small_config(coco_cc_by: Path, out: Path) -> MineConfig:
    return coco_mini_config(
        coco_cc_by, out,
        labels="categories",  # no NLTK needed, fast
        num_shards=3,
    )


@pytest.fixture(scope="module")
def good_run(coco_cc_by, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "run"
    run_mining(small_config(coco_cc_by, out), progress=False)
    return out


@pytest.fixture
def run(good_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(good_run, copy)
    return copy


def kinds(run_dir: Path) -> set[tuple[str, str]]:
    return {(p.where, p.what) for p in verify_run(str(run_dir)).problems}


def test_good_run_passes(good_run, capsys):
    report = verify_run(str(good_run))
    assert report.ok, report.problems
    stats = json.loads((good_run / "stats.json").read_text())
    assert report.shards == report.shards_checked == 3
    assert report.samples == stats["pairs"] > 0
    assert main(["verify", str(good_run), "--deep"]) == 0
    assert "OK" in capsys.readouterr().out


def test_truncated_shard(run, capsys):
    import tarfile

    tar = run / "pairs-000001.tar"
    data = tar.read_bytes()
    with tarfile.open(tar) as fh:  # cut inside the data of the member that crosses the middle
        member = next(m for m in fh.getmembers() if m.offset_data + m.size > len(data) // 2)
    tar.write_bytes(data[: member.offset_data + member.size // 2])
    found = kinds(run)
    assert ("pairs-000001.tar", "truncated") in found
    assert ("pairs-000001.tar", "checksum") in found
    assert ("pairs-000001.tar", "unreadable") in found
    assert {w for w, _ in found} == {"pairs-000001.tar"}
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "pairs-000001.tar: truncated" in out


def test_missing_shard_tar_and_missing_manifest(run):
    (run / "pairs-000002.tar").unlink()
    assert kinds(run) == {("pairs-000002.tar", "missing-shard")}
    (run / "manifest" / "pairs-000000.json").unlink()
    found = kinds(run)
    assert ("pairs-000000.tar", "missing-shard") in found
    assert ("stats.json", "stats") in found  # stats.json counts a shard the manifests no longer have


def test_parquet_row_missing_or_reordered(run):
    part = run / "parquet" / "pairs-000000.parquet"
    table = pq.read_table(part)
    assert table.num_rows >= 2
    pq.write_table(table.slice(0, table.num_rows - 1), part)
    assert kinds(run) == {("parquet/pairs-000000.parquet", "parquet-mismatch")}
    order = list(range(table.num_rows))
    order[0], order[1] = order[1], order[0]
    pq.write_table(table.take(order), part)
    problems = verify_run(str(run)).problems
    assert [p.what for p in problems] == ["parquet-mismatch"]
    assert "another order" in problems[0].detail


def test_parquet_byte_span_wrong(run):
    part = run / "parquet" / "pairs-000001.parquet"
    table = pq.read_table(part)
    offsets = table.column("tar_offset").to_pylist()
    offsets[-1] += 512
    table = table.set_column(table.schema.get_field_index("tar_offset"), "tar_offset", pa.array(offsets, pa.int64()))
    pq.write_table(table, part)
    problems = verify_run(str(run)).problems
    assert [(p.where, p.what) for p in problems] == [("parquet/pairs-000001.parquet", "parquet-mismatch")]


def _members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def _rewrite_shard(run: Path, shard: int, members: list[tuple[str, bytes]], rows: list[dict]) -> None:
    """Write a shard's tar, Parquet part and manifest consistently, as the writer would."""
    buf = io.BytesIO()
    spans: dict[str, tuple[int, int]] = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            key = name.split(".", 1)[0]
            start = buf.tell()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
            first = spans.get(key, (start, 0))[0]
            spans[key] = (first, buf.tell() - first)
    data = buf.getvalue()
    (run / f"pairs-{shard:06d}.tar").write_bytes(data)
    for row in rows:
        row["shard"], (row["tar_offset"], row["tar_size"]) = shard, spans[row["key"]]
    schema = pq.read_schema(run / "parquet" / f"pairs-{shard:06d}.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), run / "parquet" / f"pairs-{shard:06d}.parquet")
    manifest_path = run / "manifest" / f"pairs-{shard:06d}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(samples=len(rows), tar_bytes=len(data), tar_sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


def test_key_duplicated_across_shards(run):
    rows0 = pq.read_table(run / "parquet" / "pairs-000000.parquet").to_pylist()
    dup_key = rows0[0]["key"]
    dup_members = [(n, d) for n, d in _members(run / "pairs-000000.tar") if n.split(".", 1)[0] == dup_key]
    members = sorted(_members(run / "pairs-000001.tar") + dup_members, key=lambda m: m[0].split(".", 1)[0])
    # keep each sample's member order (.jpg, .mask.png, .txt, .json): sort is stable per key
    rows = sorted(pq.read_table(run / "parquet" / "pairs-000001.parquet").to_pylist() + [rows0[0]], key=lambda r: r["key"])
    _rewrite_shard(run, 1, members, rows)
    problems = verify_run(str(run)).problems
    dup = [p for p in problems if p.what == "duplicate-key"]
    assert len(dup) == 1 and dup_key in dup[0].detail and "pairs-000000.tar" in dup[0].detail
    assert any(p.what == "wrong-shard" and dup_key in p.detail for p in problems)
    assert not any(p.what in ("checksum", "parquet-mismatch", "unreadable") for p in problems)


def test_inconsistent_stats(run):
    stats = json.loads((run / "stats.json").read_text())
    stats["pairs"] += 1
    (run / "stats.json").write_text(json.dumps(stats))
    found = verify_run(str(run)).problems
    assert [(p.where, p.what) for p in found] == [("stats.json", "stats")]
    assert "pairs" in found[0].detail


def test_not_a_run_folder(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a folder that `maskmine mine` wrote" in capsys.readouterr().err


def test_damaged_rejects_lines(run):
    """A rejects.jsonl line that is not JSON (or not UTF-8) is named by its number, not counted as an image's."""
    path = run / "rejects.jsonl"
    good = path.read_bytes()
    assert verify_run(str(run)).ok
    path.write_bytes(good + b'{"image_id": 7, "reason": "cut off\n' + b'\xff\xfe\n')
    found = verify_run(str(run)).problems
    damaged = [p.detail for p in found if (p.where, p.what) == ("rejects.jsonl", "damaged")]
    n = good.count(b"\n")
    assert [d.split(":")[0] for d in damaged] == [f"line {n + 1} cannot be read", f"line {n + 2} cannot be read"]
    assert ("rejects.jsonl", "stats") not in {(p.where, p.what) for p in found}  # the good lines still add up
