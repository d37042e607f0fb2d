"""The shard format, in one place: member names, a sample's bytes, reading members back.

A sample of a mined shard is four tar members sharing its key, in this order:

- ``KEY.jpg``: the masked crop (JPEG, at the CLIP's input size);
- ``KEY.mask.png``: the crop's region mask (8-bit PNG, 255 on the region);
- ``KEY.txt``: the caption text, the run's ``caption_template`` filled with the noun
  (default ``a photo of a {noun}.``, the text maskmine trains on; open_clip's
  trainer reads this member);
- ``KEY.json``: the pair's metadata (:meth:`PairSample.metadata`), the same
  fields as the Parquet row.

Writing (:class:`TarWriter`) gives every member fixed metadata (mtime 0,
mode 0444, no owner), so a shard's bytes are a function of its samples.
Reading is webdataset's own: :func:`iter_members` keeps each member's byte span
(verify and the Parquet spans need it), :func:`group_samples` groups members
into samples as webdataset's ``group_by_keys`` does (key up to the first dot
of the base name). This is the only module that opens a shard tar by hand;
training streams through webdataset, which parses the same layout.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from maskmine.transforms.records import PairSample

IMAGE = "jpg"
MASK = "mask.png"
TEXT = "txt"
META = "json"
MEMBERS: tuple[str, ...] = (IMAGE, MASK, TEXT, META)  # a sample's member extensions, in tar order

DEFAULT_CAPTION_TEMPLATE = "a photo of a {noun}."  # what maskmine's loss encodes (finetune/losses.py)
BLOCK = tarfile.BLOCKSIZE


def check_caption_template(template: str) -> str:
    """The template, if it names ``{noun}`` and nothing else to fill; else ValueError."""
    try:
        filled = template.format(noun="\0")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"caption template {template!r}: only {{noun}} may be filled in ({exc})") from exc
    if "\0" not in filled:
        raise ValueError(f"caption template {template!r} does not contain {{noun}}")
    return template


def caption_text(template: str, noun: str) -> str:
    """The ``txt`` member of a pair: the template filled with its noun."""
    return template.format(noun=noun)


def sample_members(pair: PairSample, caption_template: str = DEFAULT_CAPTION_TEMPLATE) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in :data:`MEMBERS` order."""
    return [
        (f"{pair.key}.{IMAGE}", pair.crop_jpg),
        (f"{pair.key}.{MASK}", pair.crop_mask_png),
        (f"{pair.key}.{TEXT}", caption_text(caption_template, pair.noun).encode("utf-8")),
        (f"{pair.key}.{META}", json.dumps(pair.metadata(), sort_keys=True).encode("utf-8")),
    ]


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, as webdataset splits it: the base name at its first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return name[: len(name) - len(base)] + key, ext


class TarWriter:
    """A shard tar being written to a binary file object, one sample at a time."""

    def __init__(self, fileobj: IO[bytes], caption_template: str = DEFAULT_CAPTION_TEMPLATE) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)
        self.caption_template = caption_template

    @property
    def offset(self) -> int:
        return self._tar.offset

    def add(self, pair: PairSample) -> tuple[int, int]:
        """Append one sample; returns its (offset, size): from its first header through its last member."""
        start = self._tar.offset
        self.add_members(sample_members(pair, self.caption_template))
        return start, self._tar.offset - start

    def add_members(self, members: Iterable[tuple[str, bytes]]) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


class ShardReadError(Exception):
    """A tar that cannot be read to its end (truncated, garbage, short member)."""


@dataclass(frozen=True)
class Member:
    """One tar member and where it lies: ``offset`` is its header's, ``end`` its padded data's end."""

    name: str
    offset: int
    end: int
    data: bytes
    regular: bool = True

    @property
    def key(self) -> str:
        return split_name(self.name)[0]

    @property
    def ext(self) -> str:
        return split_name(self.name)[1]


def iter_members(data: bytes, whole: bool = True) -> Iterator[Member]:
    """The members of tar bytes in file order: a whole shard, or (``whole=False``) one sample's span.

    A whole archive must end in its end-of-archive blocks, zeros to the end of the
    data: ``tarfile`` stops quietly at a header cut short, and a shard cut there
    must still read as broken.
    """
    end = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    end = info.offset_data
                    yield Member(info.name, info.offset, end, b"", regular=False)
                    continue
                handle = tar.extractfile(info)
                payload = handle.read() if handle else b""
                if len(payload) != info.size:
                    raise ShardReadError(f"{info.name}: {len(payload)} of {info.size} bytes")
                end = info.offset_data + -(-info.size // BLOCK) * BLOCK
                yield Member(info.name, info.offset, end, payload)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardReadError(f"{type(exc).__name__}: {exc}") from exc
    if whole:
        tail = data[end:]
        if len(tail) < 2 * BLOCK or tail.count(0) != len(tail):
            raise ShardReadError(f"the archive ends at byte {len(data)} without its end-of-archive blocks "
                                 f"after its last member (byte {end}): cut short or followed by other data")


def group_samples(members: Iterable[Member]) -> list[tuple[str, list[Member]]]:
    """Consecutive members with one key, as webdataset groups them into a sample."""
    groups: list[tuple[str, list[Member]]] = []
    for member in members:
        if not groups or groups[-1][0] != member.key:
            groups.append((member.key, []))
        groups[-1][1].append(member)
    return groups


def read_samples(data: bytes, whole: bool = True) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of tar bytes (regular members only; ``whole``: as :func:`iter_members`)."""
    out: dict[str, dict[str, bytes]] = {}
    for key, members in group_samples(m for m in iter_members(data, whole) if m.regular):
        out.setdefault(key, {}).update({m.ext: m.data for m in members})
    return out


def pair_from_members(members: dict[str, bytes]) -> PairSample:
    """The PairSample a sample was written from (its json metadata and its two pictures)."""
    meta = json.loads(members[META])
    return PairSample(**meta, crop_jpg=members[IMAGE], crop_mask_png=members[MASK])


def count_keys(stream: IO[bytes]) -> int:
    """Distinct sample keys of a tar stream, from its headers (members are skipped, not decoded)."""
    keys: set[str] = set()
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            if info.isfile():
                keys.add(split_name(info.name)[0])
    return len(keys)


def noun_of(members: dict[str, bytes]) -> str:
    """The noun of a sample: its json metadata's (the ``txt`` member holds the caption text)."""
    return str(json.loads(members[META])["noun"])

