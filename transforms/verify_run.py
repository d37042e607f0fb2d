"""Check a finished mining run before anyone trains on it.

``verify_run(run_dir)`` re-reads everything the writer promised and lists
each broken promise as a ``Problem`` (what, where, detail):

* every shard 0..num_shards-1 of run.json has a manifest entry (a shard
  without one was not finished: rerun the same ``maskmine mine`` command);
* each tar is readable to its end, its byte count and sha256 match the
  manifest, its samples are whole (the four members of
  :mod:`maskmine.transforms.shard_format`), sorted by key, with metadata naming the
  same key, a txt member that is run.json's caption template filled with its noun, of images
  that hash to this shard, and as many as the manifest says;
* each Parquet part holds exactly the shard's samples, keys in the same
  order, with the byte spans (tar_offset, tar_size) that random access uses;
* keys are unique across shards;
* stats.json, sizes.json, vocabulary.json and rejects.jsonl agree with the manifests.

``deep=True`` also decodes every crop and mask image and reports an all-zero
crop mask (``empty-mask``: a crop that shows no region), slower.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from maskmine.transforms import dataset_card, storage
from maskmine.transforms.run_folder import (
    MANIFEST_DIR,
    MANIFEST_GLOB,
    REJECTS_FILE,
    RUN_FILE,
    SIZES_FILE,
    STATS_FILE,
    VOCABULARY_FILE,
    manifest_name,
    tar_name,
)
from maskmine.transforms.shard_format import (
    DEFAULT_CAPTION_TEMPLATE, IMAGE, MASK, MEMBERS, META, TEXT, ShardReadError, caption_text, group_samples, iter_members,
)
from maskmine.transforms.shards import ShardManifest, shard_of



@dataclass(frozen=True)
class Problem:
    """One broken promise of the run folder."""

    where: str  # a file name relative to the run folder, or "run"
    what: str  # short kind: missing-shard, checksum, truncated, parquet-mismatch, duplicate-key, ...
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.detail}"


@dataclass
class VerifyReport:
    run_dir: str
    shards: int = 0
    shards_checked: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str, detail: str) -> None:
        self.problems.append(Problem(where, what, detail))


@dataclass(frozen=True)
class TarSample:
    """One sample as found in a tar: its key, byte span and the metadata the writer stored."""

    key: str
    offset: int
    size: int
    noun: str
    image_id: int | None


def read_tar_samples(data: bytes, name: str, report: VerifyReport, deep: bool = False,
                     caption_template: str | None = DEFAULT_CAPTION_TEMPLATE) -> list[TarSample] | None:
    """The samples of one tar in file order; None when the tar cannot be read to its end.

    ``caption_template``: what each ``txt`` member must hold (None: the bare noun, as runs before
    the template wrote it)."""
    try:
        members = list(iter_members(data))
    except ShardReadError as exc:
        report.add(name, "unreadable", str(exc))
        return None
    for member in members:
        if not member.regular:
            report.add(name, "bad-member", f"{member.name} is not a regular file")
    samples = []
    for key, group in group_samples(m for m in members if m.regular):
        exts = [m.ext for m in group]
        if exts != list(MEMBERS):
            report.add(name, "incomplete-sample", f"{key} has members {exts}, expected {list(MEMBERS)}")
            continue
        body = {m.ext: m.data for m in group}
        text = body[TEXT].decode("utf-8", "replace")
        noun, image_id = "", None
        try:
            meta = storage.parse_json(body[META])
            image_id = int(meta["image_id"])
            noun = str(meta["noun"])
            want = noun if caption_template is None else caption_text(caption_template, noun)
            if meta.get("key") != key or text != want:
                report.add(name, "bad-metadata", f"{key}: metadata names key {meta.get('key')!r}, noun {noun!r}; "
                           f"the txt member holds {text!r}")
        except (ValueError, KeyError, TypeError) as exc:
            report.add(name, "bad-metadata", f"{key}: {type(exc).__name__}: {exc}")
        if deep:
            _decode_images(name, key, body, report)
        samples.append(TarSample(key, group[0].offset, group[-1].end - group[0].offset, noun, image_id))
    return samples


def _decode_images(name: str, key: str, body: dict[str, bytes], report: VerifyReport) -> None:
    from PIL import Image

    for ext in (IMAGE, MASK):
        try:
            with Image.open(io.BytesIO(body[ext])) as img:
                img.load()
                if ext == MASK and img.getbbox() is None:  # all zero: the crop shows no region
                    report.add(name, "empty-mask", f"{key}.{ext}: the crop mask is all zero")
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a broken sample
            report.add(name, "bad-image", f"{key}.{ext}: {type(exc).__name__}: {exc}")


def check_parquet(run_dir: str, manifest: ShardManifest, samples: list[TarSample], report: VerifyReport) -> None:
    """The Parquet part must list the shard's samples, in order, with their byte spans."""
    path = storage.join(run_dir, manifest.parquet)
    if not storage.exists(path):
        report.add(manifest.parquet, "missing-parquet", "the manifest names it but it is not there")
        return
    try:
        # single-threaded, no pre-buffering: Arrow's global thread pools are never started, so none
        # is alive when the interpreter exits (their teardown aborted 'maskmine verify' now and then)
        table = pq.read_table(
            io.BytesIO(storage.read_bytes(path)), columns=["key", "shard", "tar_offset", "tar_size", "noun", "image_id"],
            use_threads=False, pre_buffer=False,
        ).to_pydict()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a broken file
        report.add(manifest.parquet, "unreadable", f"{type(exc).__name__}: {exc}")
        return
    keys = table["key"]
    tar_keys = [s.key for s in samples]
    if keys != tar_keys:
        only_parquet = sorted(set(keys) - set(tar_keys))
        only_tar = sorted(set(tar_keys) - set(keys))
        detail = f"{len(keys)} rows vs {len(tar_keys)} samples"
        if only_parquet:
            detail += f"; only in Parquet: {only_parquet[:5]}"
        if only_tar:
            detail += f"; only in the tar: {only_tar[:5]}"
        if not only_parquet and not only_tar:
            detail += "; same keys in another order or repeated"
        report.add(manifest.parquet, "parquet-mismatch", detail)
        return
    for i, sample in enumerate(samples):
        row = (table["shard"][i], table["tar_offset"][i], table["tar_size"][i], table["noun"][i], table["image_id"][i])
        want = (manifest.shard, sample.offset, sample.size, sample.noun, sample.image_id)
        if row != want:
            report.add(
                manifest.parquet, "parquet-mismatch",
                f"row {sample.key}: (shard, tar_offset, tar_size, noun, image_id) = {row}, the tar has {want}",
            )


def check_shard(run_dir: str, manifest: ShardManifest, num_shards: int, report: VerifyReport, deep: bool,
                caption_template: str | None = DEFAULT_CAPTION_TEMPLATE) -> list[str]:
    """Check one complete shard; return its keys (for the cross-shard check)."""
    name = manifest.tar
    expected_name = tar_name(manifest.shard)
    if name != expected_name:
        report.add(name, "bad-manifest", f"manifest of shard {manifest.shard} names {name}, expected {expected_name}")
    path = storage.join(run_dir, name)
    if not storage.exists(path):
        report.add(name, "missing-shard", "the manifest names it but the tar is not there")
        return []
    data = storage.read_bytes(path)
    if len(data) != manifest.tar_bytes:
        kind = "truncated" if len(data) < manifest.tar_bytes else "size"
        report.add(name, kind, f"{len(data)} bytes, the manifest says {manifest.tar_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.tar_sha256:
        report.add(name, "checksum", f"sha256 {digest[:16]}…, the manifest says {manifest.tar_sha256[:16]}…")
    samples = read_tar_samples(data, name, report, deep, caption_template)
    if samples is None:
        return []
    if len(samples) != manifest.samples:
        report.add(name, "sample-count", f"{len(samples)} samples, the manifest says {manifest.samples}")
    keys = [s.key for s in samples]
    if keys != sorted(keys):
        report.add(name, "order", "samples are not sorted by key")
    seen: set[str] = set()
    for sample in samples:
        if sample.key in seen:
            report.add(name, "duplicate-key", f"{sample.key} appears twice in this shard")
        seen.add(sample.key)
        if sample.image_id is not None and shard_of(sample.image_id, num_shards) != manifest.shard:
            report.add(name, "wrong-shard", f"{sample.key}: image {sample.image_id} belongs to shard {shard_of(sample.image_id, num_shards)}")
    check_parquet(run_dir, manifest, samples, report)
    report.samples += len(samples)
    return keys


def _read_manifests(run_dir: str, report: VerifyReport) -> dict[int, ShardManifest]:
    manifests: dict[int, ShardManifest] = {}
    for path in sorted(storage.glob(storage.join(run_dir, MANIFEST_GLOB))):
        where = f"{MANIFEST_DIR}/{storage.basename(path)}"
        try:
            manifest = ShardManifest.from_json(storage.read_bytes(path))
        except (ValueError, TypeError) as exc:
            report.add(where, "bad-manifest", f"{type(exc).__name__}: {exc}")
            continue
        manifests[manifest.shard] = manifest
    return manifests


def _reject_lines(run_dir: str, report: VerifyReport) -> list[object] | None:
    """The records of rejects.jsonl, one a non-blank line (None when there is no file); a line that
    is not JSON is a ``damaged`` problem with its line number, and is left out of the records."""
    path = storage.join(run_dir, REJECTS_FILE)
    if not storage.exists(path):
        return None
    records: list[object] = []
    for number, line in enumerate(storage.read_bytes(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(storage.parse_json(line))
        except ValueError as exc:
            report.add(REJECTS_FILE, "damaged", f"line {number} cannot be read: {exc}")
    return records


def check_summary(run_dir: str, manifests: dict[int, ShardManifest], report: VerifyReport) -> None:
    """stats.json, sizes.json, vocabulary.json and rejects.jsonl must add up to the manifests."""
    path = storage.join(run_dir, STATS_FILE)
    if not storage.exists(path):
        report.add(STATS_FILE, "missing", "no stats.json: the driver did not finish (rerun maskmine mine)")
        return
    try:
        stats = storage.parse_json(storage.read_bytes(path))
        if not isinstance(stats, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        report.add(STATS_FILE, "damaged", f"stats.json cannot be read: {exc}")
        return
    ms = manifests.values()
    nouns: set[str] = {n for m in ms for n in m.nouns}
    want = {
        "images_read": sum(m.images for m in ms),
        "images_mined": sum(m.mined for m in ms),
        "pairs": sum(m.samples for m in ms),
        "shards": len(manifests),
        "unique_nouns": len(nouns),
    }
    for k, v in want.items():
        if stats.get(k) != v:
            report.add(STATS_FILE, "stats", f"{k} is {stats.get(k)}, the manifests give {v}")
    annotations: dict[str, int] = {}
    for m in ms:
        for reason, n in getattr(m, "annotations_skipped", {}).items():
            annotations[reason] = annotations.get(reason, 0) + n
    if (stats.get("annotations_skipped") or {}) != annotations:
        report.add(STATS_FILE, "stats", f"annotations_skipped is {stats.get('annotations_skipped')}, the manifests give {annotations}")
    skipped = sum((stats.get("images_skipped") or {}).values())
    if stats.get("images_mined", 0) + skipped != stats.get("images_read"):
        report.add(STATS_FILE, "stats", f"images_mined + images_skipped = {stats.get('images_mined', 0) + skipped}, images_read = {stats.get('images_read')}")
    spath = storage.join(run_dir, SIZES_FILE)
    if storage.exists(spath):  # runs before sizes.json have none; one that is there must be right
        try:
            recorded_sizes = storage.parse_json(storage.read_bytes(spath))
        except ValueError as exc:
            recorded_sizes = f"unreadable ({exc})"
        if recorded_sizes != dataset_card.sizes(manifests):
            report.add(SIZES_FILE, "stats", "sizes.json does not list every shard's samples as the manifests do")
    vpath = storage.join(run_dir, VOCABULARY_FILE)
    try:
        vocab = storage.parse_json(storage.read_bytes(vpath)) if storage.exists(vpath) else None
        if vocab is not None and not all(isinstance(v, dict) and isinstance(v.get("pairs"), int) for v in vocab):
            raise ValueError("not a list of {noun, pairs}")
    except (ValueError, TypeError) as exc:
        report.add(VOCABULARY_FILE, "damaged", f"vocabulary.json cannot be read: {exc}")
        vocab = "damaged"
    if isinstance(vocab, list):
        if sum(v["pairs"] for v in vocab) != want["pairs"] or len(vocab) != want["unique_nouns"]:
            report.add(VOCABULARY_FILE, "stats", f"{len(vocab)} nouns, {sum(v['pairs'] for v in vocab)} pairs; the manifests give {want['unique_nouns']}, {want['pairs']}")
    elif vocab is None:
        report.add(VOCABULARY_FILE, "missing", "no vocabulary.json")
    rejects = _reject_lines(run_dir, report)
    if rejects is not None:
        # Lines of entries that never became an image (image_id null) match stats.json's input_skipped
        # kinds ("reason:problem" keys there count annotations/captions, which the manifests list).
        entries = sum(1 for r in rejects if isinstance(r, dict) and "image_id" in r and r["image_id"] is None)
        n_entries = sum(v for k, v in (stats.get("input_skipped") or {}).items() if ":" not in k and isinstance(v, int))
        n_rejects = sum(len(m.rejects) for m in ms)
        if len(rejects) - entries != n_rejects:
            report.add(REJECTS_FILE, "stats", f"{len(rejects) - entries} lines of images, the manifests list {n_rejects} rejected images, annotations and captions")
        if entries != n_entries:
            report.add(REJECTS_FILE, "stats", f"{entries} lines of entries left out before mining, stats.json's input_skipped counts {n_entries}")


def verify_run(run_dir: str, deep: bool = False) -> VerifyReport:
    """Check every shard, Parquet part and summary file of a mining run folder."""
    report = VerifyReport(run_dir=str(run_dir))
    run_path = storage.join(str(run_dir), RUN_FILE)
    if not storage.exists(run_path):
        report.add("run", "not-a-run", f"no {RUN_FILE} in {run_dir}: not a folder that `maskmine mine` wrote")
        return report
    try:
        identity = storage.parse_json(storage.read_bytes(run_path))["identity"]
        num_shards = int(identity["num_shards"])
        caption_template = identity.get("caption_template")  # absent: a run from before the template, bare nouns
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        report.add("run", "not-a-run", f"{RUN_FILE} in {run_dir} is damaged ({type(exc).__name__}: {exc})")
        return report
    report.shards = num_shards
    manifests = _read_manifests(str(run_dir), report)
    for shard in sorted(set(manifests) - set(range(num_shards))):
        report.add(manifest_name(shard), "bad-manifest", f"shard {shard} is outside 0..{num_shards - 1}")
    owner: dict[str, int] = {}
    for shard in range(num_shards):
        if shard not in manifests:
            report.add(
                tar_name(shard), "missing-shard",
                "no manifest entry: the shard was never finished (rerun the same `maskmine mine` command)",
            )
            continue
        keys = check_shard(str(run_dir), manifests[shard], num_shards, report, deep, caption_template)
        report.shards_checked += 1
        for key in keys:
            if key in owner and owner[key] != shard:
                report.add(tar_name(shard), "duplicate-key", f"{key} is also in {tar_name(owner[key])}")
            owner.setdefault(key, shard)
    check_summary(str(run_dir), {s: m for s, m in manifests.items() if s < num_shards}, report)
    return report
