"""The one local atomic writer: content lands whole under the final name, or not at all."""
import json

import pytest
import torch

from maskmine.transforms.atomic import atomic_torch_save, atomic_write, atomic_write_json, replacing


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
