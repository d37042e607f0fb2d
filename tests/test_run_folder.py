"""The run folder's names and the one settings check of an output folder."""
from maskmine.transforms import run_folder as rf


def test_every_file_of_a_shard_shares_its_stem():
    assert rf.tar_name(3) == "pairs-000003.tar"
    assert rf.parquet_name(3) == "parquet/pairs-000003.parquet"
    assert rf.manifest_name(3) == "manifest/pairs-000003.json"
    assert rf.task_name(3) == "tasks/pairs-000003.jsonl"
    assert rf.progress_name(3) == "progress/pairs-000003.json"
    assert rf.sidecar_names(rf.tar_name(3)) == (rf.parquet_name(3), rf.manifest_name(3))
    assert rf.shard_from_name("pairs-000012.json", rf.PROGRESS_SUFFIX) == 12
    assert (rf.TAR_GLOB, rf.MANIFEST_GLOB) == ("pairs-*.tar", "manifest/pairs-*.json")


def test_changed_settings_compares_as_json_and_ignores_locations():
    recorded = {"box": [1, 2], "seed": 0, "images": "/a"}
    assert rf.changed_settings(recorded, {"box": (1, 2), "seed": 0, "images": "/b"}, ignore={"images"}) == []
    assert rf.changed_settings(recorded, {"box": (1, 2), "seed": 1, "extra": 1, "images": "/a"}) == ["extra", "seed"]
