"""The one home of atomic writes: content lands whole under the final name, or not at all; local or remote."""
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskmine.transforms.atomic import atomic_torch_save, atomic_write, atomic_write_json, replacing, replacing_folder


def test_bytes_text_json_and_torch(tmp_path):
    atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01")  # creates the parent folder
    atomic_write(tmp_path / "t.txt", "héllo")
    atomic_write_json(tmp_path / "j.json", {"x": [1, 2]}, indent=1)
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temporaries left


def test_failed_write_keeps_old_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_streamed_writer_commits_whole_or_nothing(tmp_path):
    from maskmine.transforms.atomic import AtomicWriter

    path = tmp_path / "sub" / "s.tar"
    with AtomicWriter(path) as writer:  # creates the parent folder
        writer.write(b"ab")
        writer.write(b"c")
        assert writer.tell() == 3 and not path.exists()
        assert [p.name for p in path.parent.iterdir()] == [Path(writer.tmp).name]  # visible s.tar.tmp-<uuid>
        assert Path(writer.tmp).name.startswith("s.tar.tmp-")
        writer.commit()
    assert path.read_bytes() == b"abc" and writer.sha256 == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(RuntimeError):
        with AtomicWriter(path) as writer:
            writer.write(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"abc" and [p.name for p in path.parent.iterdir()] == ["s.tar"]


class FakeRemote:
    """Beam's FileSystems API over a dict, to see what a remote write does."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.calls: list[str] = []

    def create(self, path):
        self.calls.append(f"create {path}")
        fs = self

        class Handle(io.BytesIO):
            def close(self):
                if not self.closed:
                    fs.files[path] = self.getvalue()
                super().close()

        return Handle()

    def exists(self, path):
        return path in self.files

    def delete(self, paths):
        self.calls += [f"delete {p}" for p in paths]
        for p in paths:
            del self.files[p]

    def rename(self, sources, destinations):
        self.calls += [f"rename {s} {d}" for s, d in zip(sources, destinations)]
        for s, d in zip(sources, destinations):
            self.files[d] = self.files.pop(s)


def test_remote_paths_go_through_beam_filesystems(monkeypatch):
    from maskmine.transforms import atomic

    fake = FakeRemote()
    monkeypatch.setattr(atomic, "beam_filesystems", lambda: fake)
    atomic_write("gs://b/run/stats.json", b"{}")
    atomic_write("gs://b/run/stats.json", "{ }")
    assert fake.files == {"gs://b/run/stats.json": b"{ }"}
    tmp = [c.split()[1] for c in fake.calls if c.startswith("create")]
    assert len(tmp) == 2 and all(t.startswith("gs://b/run/stats.json.tmp-") for t in tmp)
    assert fake.calls[-2:] == ["delete gs://b/run/stats.json", f"rename {tmp[1]} gs://b/run/stats.json"]


def test_local_writes_and_run_folder_imports_do_not_load_beam(tmp_path):
    code = (
        "import sys, maskmine.transforms.shards, maskmine.transforms.tasks, maskmine.transforms.storage as f, "
        "maskmine.transforms.atomic as a; "
        f"a.atomic_write({str(tmp_path / 'x.json')!r}, b'1'); "
        f"w = a.AtomicWriter({str(tmp_path / 'y.tar')!r}); w.write(b'2'); w.commit(); "
        "print('apache_beam' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    assert (tmp_path / "x.json").read_bytes() == b"1" and (tmp_path / "y.tar").read_bytes() == b"2"


def test_a_rerun_sweeps_both_kinds_of_temporaries(tmp_path):
    """What a SIGKILL leaves: a whole file's hidden .NAME.tmp-<uuid>, a streamed file's NAME.tmp-<uuid>."""
    from maskmine.transforms import storage
    from maskmine.transforms.atomic import AtomicWriter, temporary_sibling

    whole = temporary_sibling(tmp_path / "stats.json")
    whole.write_bytes(b"half")
    streamed = AtomicWriter(tmp_path / "pairs-000000.tar")
    streamed.write(b"half")
    (tmp_path / "stats.json").write_bytes(b"{}")
    assert storage.remove_temporaries(str(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "step-3"
    with replacing_folder(target) as tmp:
        (tmp / "a.txt").write_text("new")
    (target / "old.txt").write_text("stale")
    with replacing_folder(target) as tmp:  # replacing drops what the new folder does not hold
        (tmp / "a.txt").write_text("newer")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"] and (target / "a.txt").read_text() == "newer"
    with pytest.raises(RuntimeError):
        with replacing_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-3"]  # no temporary folder left
