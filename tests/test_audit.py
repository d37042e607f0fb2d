"""maskmine audit on a run mined from the committed COCO images (coco_cc_by): report files, counts, random access, score sheets."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image
from pycocotools import mask as mask_utils

from maskmine.pipelines.cli import main
from maskmine.pipelines.mine import run_mining
from maskmine.transforms.audit.access import locate, open_run, read_by_key, read_rows
from maskmine.transforms.audit.scoresheet import parse_verdict, score_sheet, wilson_interval
from maskmine.transforms.audit.table import Query, load_overview, query_rows, rare_nouns, spot_check_rows, top_nouns
from maskmine.transforms.audit.thumbs import OUTLINE_RGB, boundary, erode, outlined_thumbnail
from maskmine.transforms.errors import UserError
from mining_helpers import coco_mini_config

PAGES = ("index.html", "frequent.html", "rare.html", "suspicious.html", "spot-check.html")


@pytest.fixture(scope="module")
def run_dir(coco_cc_by, nltk_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "run"
    labels = "nouns" if importlib.util.find_spec("maskmine.transforms.nouns") else "categories"
    run_mining(coco_mini_config(coco_cc_by, out, labels=labels, num_shards=3), progress=False)
    return out


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    code = main(["audit", str(run_dir), "--out", str(out), "--sample", "25", "--seed", "7",
                 "--top-nouns", "8", "--rare-nouns", "8", "--per-noun", "4", "--suspicious", "10", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def table(run_dir) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "parquet")


class Links(HTMLParser):
    """Every src/href of a page, plus the summary cells tagged with data-stat / data-parquet."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.cells: dict[str, dict[str, str]] = {"stat": {}, "parquet": {}}
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for name in ("src", "href"):
            if a.get(name):
                self.refs.append(a[name])
        for source in ("stat", "parquet"):
            if f"data-{source}" in a:
                self.cells[source][a[f"data-{source}"]] = a["data-value"]


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def flatten(stats: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


# --- the report ---------------------------------------------------------------------------------------


def test_pages_exist_and_reference_only_existing_local_files(report):
    for page in PAGES:
        links = parse(report / page)
        assert "script" not in links.tags
        assert links.refs, page
        for ref in links.refs:
            if ref.startswith("#") or ref.startswith("data:"):
                continue
            assert not re.match(r"^[a-z]+://", ref) and not ref.startswith("//"), f"{page}: external {ref}"
            target = ref.split("#", 1)[0]
            assert (report / target).is_file(), f"{page} references missing {ref}"
    assert (report / "spot-check.csv").is_file() and (report / "report.json").is_file()


def test_summary_counts_equal_stats_and_parquet(report, run_dir, table):
    cells = parse(report / "index.html").cells
    stats = json.loads((run_dir / "stats.json").read_text())
    flat = flatten(stats)
    shown = cells["stat"]
    wanted = {"images_read", "images_mined", "pairs", "unique_nouns", "shards", "shards_resumed", "wall_seconds"}
    wanted |= {f"seconds_per_stage.{s}" for s in stats["seconds_per_stage"]}
    wanted |= {f"images_skipped.{r}" for r in stats["images_skipped"]} | {f"pairs_dropped.{r}" for r in stats["pairs_dropped"]}
    assert set(shown) == wanted
    for name, value in shown.items():
        assert float(value) == pytest.approx(flat[name]), name
    assert cells["parquet"] == {
        "rows": str(len(table)),
        "unique_nouns": str(table["noun"].nunique()),
        "images": str(table["image_id"].nunique()),
    }
    assert int(shown["pairs"]) == len(table)
    summary = json.loads((report / "report.json").read_text())
    assert all(summary["checks"].values())


def test_gallery_and_plot_images_decode(report):
    jpgs = sorted((report / "img").glob("*.jpg"))
    sources = [p for p in jpgs if p.name.endswith(".src.jpg")]
    crops = [p for p in jpgs if p.name.endswith(".crop.jpg")]
    assert crops and len(sources) == len(crops)  # the run.json names the images folder
    for path in jpgs:
        with Image.open(path) as img:
            img.load()
            assert img.format == "JPEG" and min(img.size) > 8
    for path in (report / "plots").glob("*.png"):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
            assert pixels.std() > 5  # a drawn plot, not an empty canvas
    assert len(list((report / "plots").glob("*.png"))) == 5


def test_galleries_show_the_most_frequent_nouns(report, run_dir):
    vocab = json.loads((run_dir / "vocabulary.json").read_text())
    html = (report / "frequent.html").read_text()
    headings = re.findall(r'<h2 id="[^"]+">([^<]+)<small>', html)
    assert [h.strip() for h in headings] == [v["noun"] for v in vocab[:8]]


def test_suspicious_page_lists_lowest_margins_first(report, table):
    html = (report / "suspicious.html").read_text()
    margin_part = html.split('id="lowest-margin"')[1].split('id="lowest-score"')[0]
    keys = re.findall(r'<figure class="card" id="([^"]+)"', margin_part)
    expected = table.dropna(subset=["margin"]).sort_values(["margin", "score"], kind="stable")["key"].head(10).tolist()
    assert keys == expected


SCRIPT = "<script>alert(1)</script>"


class PageText(HTMLParser):
    """The tags of a page and its text, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [v for _, v in attrs if v]

    def handle_data(self, data):
        self.text.append(data)


def read_markup(html: str) -> PageText:
    page = PageText()
    page.feed(html)
    return page


def test_text_from_the_run_is_escaped_on_every_page(run_dir, tmp_path):
    """A run folder name and a query noun with markup in them reach the pages as text."""
    link = tmp_path / 'run<img src=x onerror="alert(1)">'
    link.symlink_to(run_dir, target_is_directory=True)
    out = tmp_path / "report"
    assert main(["audit", str(link), "--out", str(out), "--top-nouns", "2", "--rare-nouns", "1", "--per-noun", "1",
                 "--suspicious", "1", "--sample", "2", "--noun", SCRIPT, "--noun", "dog", "--no-progress"]) == 0
    for page in sorted(out.glob("*.html")):
        html = page.read_text(encoding="utf-8")
        parsed = read_markup(html)
        assert "script" not in parsed.tags and parsed.tags.count("img") == html.count("<img "), page.name
        assert link.name in "".join(parsed.text), page.name  # the header names the run, as text
    assert SCRIPT in "".join(read_markup((out / "query.html").read_text(encoding="utf-8")).text)
    index = read_markup((out / "index.html").read_text(encoding="utf-8"))
    assert str(link) in "".join(index.text)
    # the spot-check lead's own markup stays markup
    spot = read_markup((out / "spot-check.html").read_text(encoding="utf-8"))
    assert "spot-check.csv" in spot.attrs and "code" in spot.tags


def test_gallery_cards_escape_every_field():
    from maskmine.transforms.audit import html as H
    from maskmine.transforms.audit.report import GalleryPage, Section

    card = H.Card(key=f'k"{SCRIPT}', noun=SCRIPT, score=0.5, margin=None, image_id=1, file_name=f"{SCRIPT}.jpg",
                  crop_src='img/a".jpg', image_src=None, image_note=SCRIPT)
    page = GalleryPage("x.html", SCRIPT, SCRIPT, SCRIPT, [Section(SCRIPT, [0], "a", SCRIPT), Section("b", [], "b")],
                       numbered=True)
    html = H.render("gallery.html", title=SCRIPT, nav=[("x.html", SCRIPT)], current="x.html", run_name=SCRIPT,
                    page=page, cards={0: card})
    parsed = read_markup(html)
    assert "script" not in parsed.tags and html.count(SCRIPT) == 0
    assert "".join(parsed.text).count(SCRIPT) >= 8  # title, run name, nav, h1, lead, section, note, noun, note, file
    assert card.key in parsed.attrs and card.crop_src in parsed.attrs
    assert "#1" in parsed.text  # the numbered page badges its card


# --- random access ------------------------------------------------------------------------------------


def test_random_access_equals_full_scan(run_dir):
    run = open_run(run_dir)
    urls = [str(p) for p in sorted(run_dir.glob("pairs-*.tar"))]
    scanned = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    keys = sorted(scanned)
    fetched = read_by_key(run, keys)
    assert set(fetched) == set(scanned)
    for key in keys:
        members = fetched[key].members
        assert set(members) == {k for k in scanned[key] if not k.startswith("__")}
        for ext, data in members.items():
            assert data == scanned[key][ext], (key, ext)
    assert fetched[keys[0]].metadata["key"] == keys[0]


def test_locate_reads_only_the_keys_shard_and_rejects_unknown_keys(run_dir, table):
    run = open_run(run_dir)
    row = table.iloc[len(table) // 2]
    loc = locate(run, [row["key"]])[row["key"]]
    assert (loc.shard, loc.offset, loc.size) == (row["shard"], row["tar_offset"], row["tar_size"])
    with pytest.raises(UserError, match="no pair with key"):
        locate(run, [f"{row['image_id']}-no_such_noun"])
    with pytest.raises(UserError, match="not a pair key"):
        locate(run, ["dog"])


def test_read_rows_keeps_the_asked_order_across_batches(run_dir):
    run = open_run(run_dir)
    part = pd.read_parquet(run_dir / "parquet" / "pairs-000001.parquet")
    assert len(part) > 3 * 7  # rows in several batches of 7
    rows = [len(part) - 1, 3, len(part) // 2 + 8, 3, 0]
    got = read_rows(run, 1, rows, columns=["key", "score"], batch_size=7)
    assert got.column_names == ["key", "score"]
    assert got.column("key").to_pylist() == part["key"].iloc[rows].tolist()
    assert read_rows(run, 1, []).num_rows == 0
    with pytest.raises(IndexError):
        read_rows(run, 1, [len(part)])


def test_overview_is_independent_of_batch_size_and_matches_pandas(run_dir, table):
    run = open_run(run_dir)
    big, small = load_overview(run), load_overview(run, batch_size=37)
    assert [big.nouns[c] for c in big.noun_code] == [small.nouns[c] for c in small.noun_code] == table["noun"].tolist()
    np.testing.assert_array_equal(big.area, small.area)
    np.testing.assert_allclose(big.score, table["score"].to_numpy(), rtol=1e-6)
    assert np.isnan(big.margin).sum() == table["margin"].isna().sum()
    first = table.iloc[0]
    mask = mask_utils.decode({"size": [int(first["height"]), int(first["width"])], "counts": first["mask_rle"].encode()})
    assert big.area[0] == pytest.approx(mask.sum() / mask.size, rel=1e-5)
    assert sorted(big.pairs_per_image()) == sorted(table.groupby("image_id").size())


def test_rare_nouns_are_rare_seeded_and_not_frequent(run_dir):
    ov = load_overview(open_run(run_dir))
    counts = ov.noun_counts()
    frequent = top_nouns(ov, 5)
    a = rare_nouns(ov, 6, seed=1, max_pairs=2, exclude=frequent)
    assert a == rare_nouns(ov, 6, seed=1, max_pairs=2, exclude=frequent)
    assert not set(a) & set(frequent)
    if (counts <= 2).sum() > 6:
        assert all(counts[c] <= 2 for c in a)


# --- queries -------------------------------------------------------------------------------------------


def test_query_cli_filters_like_pandas(run_dir, table, tmp_path, capsys):
    noun = table["noun"].value_counts().index[0]
    threshold = float(table.loc[table["noun"] == noun, "score"].median())
    out = tmp_path / "q"
    code = main(["audit", str(run_dir), "--out", str(out), "--query", "--noun", noun,
                 "--min-score", str(threshold), "--no-progress"])
    assert code == 0
    expected = table[(table["noun"] == noun) & (table["score"] >= np.float32(threshold))]
    result = json.loads((out / "query.json").read_text())
    assert result["query"]["matches"] == len(expected)
    assert f"{len(expected)} pairs match" in capsys.readouterr().out
    html = (out / "query.html").read_text()
    assert sorted(re.findall(r'<figure class="card" id="([^"]+)"', html)) == sorted(expected["key"])
    assert not (out / "index.html").exists()


def test_query_margin_and_image_filters(run_dir, table):
    ov = load_overview(open_run(run_dir))
    image = int(table["image_id"].iloc[0])
    rows = query_rows(ov, Query(image_ids=[image], max_margin=0.0))
    expected = table[(table["image_id"] == image) & (table["margin"] <= 0.0)]
    assert sorted(table["key"].iloc[rows]) == sorted(expected["key"])
    assert len(query_rows(ov, Query(nouns=["no such noun"]))) == 0


# --- spot check ----------------------------------------------------------------------------------------


def test_spot_check_sheet_is_reproducible_and_matches_parquet(report, run_dir, table, tmp_path):
    sheet = list(csv.DictReader((report / "spot-check.csv").open()))
    assert len(sheet) == 25 and list(sheet[0]) == ["key", "noun", "image", "score", "verdict"]
    rows = table.set_index("key")
    for r in sheet:
        assert r["verdict"] == ""
        assert r["noun"] == rows.loc[r["key"], "noun"] and r["image"] == rows.loc[r["key"], "file_name"]
        assert float(r["score"]) == pytest.approx(rows.loc[r["key"], "score"], abs=1e-6)
    again = tmp_path / "again"
    assert main(["audit", str(run_dir), "--out", str(again), "--sample", "25", "--seed", "7",
                 "--top-nouns", "1", "--rare-nouns", "1", "--suspicious", "1", "--no-progress"]) == 0
    assert (again / "spot-check.csv").read_text() == (report / "spot-check.csv").read_text()
    ov = load_overview(open_run(run_dir))
    assert not np.array_equal(spot_check_rows(ov, 25, 7), spot_check_rows(ov, 25, 8))


def test_score_sheet_round_trip(tmp_path, capsys):
    verdicts = ["correct", "Y", "✓", "1", "yes", "CORRECT", "✔", "y", "n", "✗", "", "  "]
    sheet = tmp_path / "filled.csv"
    with sheet.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "noun", "image", "score", "verdict"])
        for i, v in enumerate(verdicts):
            w.writerow([f"{i}-dog", "dog" if i % 2 else "cat", f"{i}.jpg", "0.3", v])
    assert main(["audit", "--score-sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "precision 0.800 (8/10 correct)" in out and "95% Wilson interval [0.490, 0.943]" in out
    assert "2 rows without a verdict ignored" in out
    result = json.loads((tmp_path / "filled.precision.json").read_text())
    assert (result["correct"], result["judged"], result["blank"]) == (8, 10, 2)
    assert result["low"] == pytest.approx(0.49016, abs=1e-4) and result["high"] == pytest.approx(0.94332, abs=1e-4)
    assert result["method"] == "wilson" and result["confidence"] == 0.95
    # per noun: odd rows are dogs (Y, 1, CORRECT, y, ✗ judged; "  " blank)
    assert result["by_noun"]["dog"] == {"correct": 4, "judged": 5, "precision": 0.8}


def test_score_sheet_errors(tmp_path, capsys):
    sheet = tmp_path / "s.csv"
    sheet.write_text("key,verdict\n1-dog,maybe\n")
    assert main(["audit", "--score-sheet", str(sheet)]) == 2
    assert "line 2: verdict 'maybe'" in capsys.readouterr().err
    sheet.write_text("key,verdict\n1-dog,\n")
    assert main(["audit", "--score-sheet", str(sheet)]) == 2
    assert "no verdicts yet" in capsys.readouterr().err
    sheet.write_text("key,noun\n1-dog,dog\n")
    with pytest.raises(UserError, match="no 'verdict' column"):
        score_sheet(sheet.read_text())


def test_score_sheet_keys_are_checked_against_the_run(run_dir, tmp_path, capsys):
    sheet = tmp_path / "s.csv"
    sheet.write_text("key,verdict\n999999999-dog,correct\n")
    assert main(["audit", str(run_dir), "--score-sheet", str(sheet)]) == 2
    assert "no pair with key '999999999-dog'" in capsys.readouterr().err


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    assert wilson_interval(10, 10) == (pytest.approx(0.72247, abs=1e-5), 1.0)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.40383, abs=1e-5) and high == pytest.approx(0.59617, abs=1e-5)
    low99, high99 = wilson_interval(50, 100, 0.99)
    assert low99 < low and high99 > high
    assert [parse_verdict(v) for v in ("Incorrect", "N", "0", "✘", " ")] == [False, False, False, False, None]


# --- errors and thumbnails -----------------------------------------------------------------------------


def test_not_a_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert "is not a maskmine run folder (no run.json)" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"identity": {"num_shards": 1}}))
    assert main(["audit", str(tmp_path)]) == 2
    assert "unfinished run (no stats.json)" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["audit"]) == 2
    assert "give a run folder" in capsys.readouterr().err


def test_outline_marks_the_mask_boundary_only():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    inner = erode(mask)
    assert inner.sum() == 18 * 28 and not (inner & ~mask).any()
    edge = boundary(mask, thickness=1)
    assert edge.sum() == mask.sum() - inner.sum()
    image = np.full((40, 60, 3), 100, np.uint8)
    thumb = outlined_thumbnail(image, mask, max_side=60, dim=0.5)
    assert tuple(thumb[10, 30]) == OUTLINE_RGB and tuple(thumb[29, 49]) == OUTLINE_RGB
    assert tuple(thumb[20, 35]) == (100, 100, 100)  # inside: untouched
    assert tuple(thumb[2, 2]) == (50, 50, 50)  # outside: dimmed
    small = outlined_thumbnail(np.zeros((400, 600, 3), np.uint8), mask.repeat(10, 0).repeat(10, 1), max_side=120)
    assert small.shape == (80, 120, 3)
    with pytest.raises(ValueError):
        outlined_thumbnail(image, mask[:20])
