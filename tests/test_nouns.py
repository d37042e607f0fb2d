"""Noun extraction on real coco-mini captions and a few hand-written ones.

Every expected list below was checked by reading the caption next to it.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from maskmine.transforms import nouns
from maskmine.transforms.errors import UserError
from maskmine.transforms.nouns import caption_nouns, ensure_nltk_data, extract_nouns, nonvisual_nouns
from maskmine.transforms.records import Caption, NounOccurrence

DATA_FILE = Path(nouns.__file__).parent / "data" / nouns.NONVISUAL_FILE


@pytest.fixture(scope="module")
def coco_captions(coco_mini_captions) -> dict[int, dict]:
    """coco-mini caption annotations by caption id (the committed captions file: no images needed)."""
    data = json.loads(coco_mini_captions.read_text())
    return {a["id"]: a for a in data["annotations"]}


def _image_captions(coco_captions: dict[int, dict], image_id: int) -> list[Caption]:
    rows = [a for a in coco_captions.values() if a["image_id"] == image_id]
    return [Caption(a["id"], a["caption"]) for a in sorted(rows, key=lambda a: a["id"])]


# --- the documented stoplist -------------------------------------------------


def test_nonvisual_list_parses_and_has_the_issue_examples():
    words = nonvisual_nouns()
    for word in ("top", "front", "side", "view", "picture", "lot", "group", "bunch", "couple"):
        assert word in words
    assert all(w == w.strip().lower() and "#" not in w for w in words)
    assert all(re.fullmatch(r"[a-z][a-z\- ]*[a-z]", w) for w in words)
    # Every non-comment line is one entry, and none is listed twice.
    lines = [ln.split("#", 1)[0].strip() for ln in DATA_FILE.read_text().splitlines()]
    entries = [ln for ln in lines if ln]
    assert len(entries) == len(set(entries)) == len(words)
    # Objects that share a name with a colour or a group word stay nouns.
    assert not {"orange", "crowd", "herd", "person", "table"} & words


def test_nonvisual_words_are_dropped_but_their_objects_stay(nltk_data):
    assert caption_nouns("A picture of a group of people in front of a building.") == ["person", "building"]
    assert caption_nouns("A close-up view of a pizza.") == ["pizza"]
    assert caption_nouns("a 3 year old kid with 2 balls and a x") == ["kid", "ball"]


# --- NLTK resources ------------------------------------------------------------


def _only_these_nltk_folders(monkeypatch, *folders) -> None:
    """NLTK searches exactly ``folders``, and maskmine's own copy is out of reach."""
    import nltk

    monkeypatch.setattr(nouns, "_ready", False)
    monkeypatch.setattr(nouns, "BUNDLED_NLTK_DATA", str(folders[0] / "no-bundled-copy"))
    monkeypatch.setattr(nltk.data, "path", [str(f) for f in folders])
    monkeypatch.setenv("NLTK_DATA", os.pathsep.join(str(f) for f in folders))


def test_missing_tagger_is_a_clear_user_error(nltk_data, tmp_path, monkeypatch):
    _only_these_nltk_folders(monkeypatch, tmp_path)
    with pytest.raises(UserError) as err:
        ensure_nltk_data()
    message = str(err.value)
    assert "taggers/averaged_perceptron_tagger_eng" in message and "NLTK_DATA" in message
    assert "\n" not in message


def test_missing_wordnet_is_named(nltk_data, tmp_path, monkeypatch):
    (tmp_path / "taggers").mkdir()
    (tmp_path / "taggers" / "averaged_perceptron_tagger_eng.zip").write_bytes(
        (Path(nouns.BUNDLED_NLTK_DATA) / "taggers" / "averaged_perceptron_tagger_eng.zip").read_bytes()
    )
    _only_these_nltk_folders(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="corpora/wordnet"):
        ensure_nltk_data()


@pytest.mark.parametrize("damaged", ["taggers/averaged_perceptron_tagger_eng.zip", "corpora/wordnet.zip"])
def test_damaged_copy_is_one_line_naming_it(nltk_data, tmp_path, monkeypatch, damaged):
    bundled = Path(nouns.BUNDLED_NLTK_DATA)
    for name in ("taggers/averaged_perceptron_tagger_eng.zip", "corpora/wordnet.zip"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes((bundled / name).read_bytes())
    blob = (tmp_path / damaged).read_bytes()
    (tmp_path / damaged).write_bytes(blob[: len(blob) // 3])  # a truncated download
    _only_these_nltk_folders(monkeypatch, tmp_path)
    with pytest.raises(UserError) as err:
        ensure_nltk_data()
    message = str(err.value)
    assert damaged.split(".")[0] in message and "\n" not in message


def test_nltk_data_from_environment_is_honoured(nltk_data, monkeypatch):
    """Beam workers get NLTK_DATA after nltk was imported; it is searched first, the shipped copy last."""
    import nltk

    monkeypatch.setattr(nouns, "_ready", False)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setenv("NLTK_DATA", str(nltk_data))
    ensure_nltk_data()
    assert nltk.data.path == [str(nltk_data), nouns.BUNDLED_NLTK_DATA]


def test_shipped_copy_is_found_with_nothing_set(tmp_path):
    """A fresh install: no NLTK_DATA and no NLTK folder anywhere; the zipped copy inside maskmine is used."""
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    code = (
        "import nltk; nltk.data.path[:] = []; from maskmine.transforms import nouns; "
        "print(nouns.caption_nouns('Two dogs chase a frisbee on the grass.')); "
        "print(nltk.data.find(nouns.TAGGER_RESOURCE)); print(nltk.data.find(nouns.WORDNET_RESOURCE))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    nouns_line, tagger, wordnet = out.stdout.splitlines()
    assert nouns_line == "['dog', 'frisbee', 'grass']"
    assert tagger == str(Path(nouns.BUNDLED_NLTK_DATA) / "taggers/averaged_perceptron_tagger_eng.zip/averaged_perceptron_tagger_eng")
    assert wordnet == str(Path(nouns.BUNDLED_NLTK_DATA) / "corpora/wordnet.zip/wordnet")
    for licence in ("LICENSE-wordnet.txt", "LICENSE-nltk_data.txt"):
        assert (Path(nouns.BUNDLED_NLTK_DATA) / licence).stat().st_size > 500


# --- real captions -------------------------------------------------------------

REAL_CAPTIONS = {
    # irregular plurals, people -> person
    "plurals": [
        (551610, ["man", "banana"]),  # Three different men all eating yellow bananas together.
        (650191, ["woman", "licence", "hand"]),  # a women that has her licence in her hand
        (529320, ["child", "road", "leaf"]),  # A little child walking down a small road on top of leaves.
        (584013, ["person", "dining table", "cake", "drink"]),  # Four persons sitting on dining table for ...
        (63148, ["man", "woods", "frisbee", "dog"]),  # Two men stand in the woods holding frisbees near a dog.
    ],
    # colour words before a noun are adjectives even when tagged NN; "orange" alone is a fruit
    "colours": [
        (347853, ["pile", "suitcase", "wall"]),  # A pile of suitcases against a blue and red wall.
        (349152, ["pile", "luggage", "wall"]),  # A pile of luggage sitting next to a pink wall.
        (203442, ["man", "jacket", "slope"]),  # a man in a grey jacket skiing down a slope
        (215289, ["bus", "church", "clock tower"]),  # An orange  bus parked in front of a church with a tall ...
        (35881, ["bird", "orange", "tree branch"]),  # a bird holding a piece of orange while perched on a tree branch
    ],
    # WordNet compounds are one noun, also when the tagger splits them oddly
    "compounds": [
        (170925, ["boy", "chair", "hot dog"]),  # A little boy sitting in a chair with a hot dog.
        (348499, ["fire hydrant", "field", "tree"]),  # a fire hydrant on a field near a tree
        (261652, ["teddy bear", "cup", "coffee"]),  # A brown teddy bear/IN sitting by a blue and white cup of coffee.
        (166458, ["man", "tennis racquet", "tennis court"]),  # A man holding a tennis racquet on a tennis court.
        (254163, ["stop sign", "flower", "building", "tree"]),  # a stop sign some red flowers a building and ...
        (534179, ["man", "post", "cell phone", "car", "trunk", "door"]),  # Man leaning on post on cell phone with ...
        (261539, ["baseball player", "bat", "baseball field"]),  # A baseball player swinging a bat on a ...
        (526220, ["beach", "wave", "parking lot", "stair", "beach"]),  # ... a parking lot with stairs to the beach.
        (198109, ["street sign", "traffic light", "path"]),  # a street sign and traffic light near a small path
    ],
    "possessives": [
        (551451, ["child", "umbrella", "house"]),  # The young child's umbrella is left open in the house.
        (679113, ["person", "snow", "ski", "ski pole"]),  # A person in the snow with ski's and ski poles.
    ],
    # typos are extracted as written when tagged noun, never corrected
    "typos": [
        (719166, ["person", "restaraunt", "wine glass"]),  # people in a restaraunt eating and wine glasses besides it
        (262056, ["stop sign", "font", "plant", "flower"]),  # A stop sign in font of a plant with red flowers.
    ],
    "nonvisual": [
        (466777, ["horse", "hill", "mountain"]),  # a number of horses on a hill with mountains in the background
        (69955, ["toothbrush", "holder"]),  # Aerial view of four toothbrushes in a holder.
        (117249, ["toy", "kitchen"]),  # A picture of some toys are in the kitchen.
        (348209, ["giraffe", "tree"]),  # A giraffe standing next to a bunch of trees.
        (337813, ["zebra", "grass", "field"]),  # A couple of zebra standing in a grass field.
        (105451, ["plane", "tarmac", "bus"]),  # A plane sitting on a tarmac with a lots of buses.
    ],
    "casing": [
        (446659, ["panda bear", "enclosure"]),  # LARGE BLACK AND WHITE PANDA BEAR WALKING AROUND IN AN ENCLOSURE
        (75562, ["toothbrush", "holder", "toothbrush"]),  # THE TOP VIEW OF A TOOTHBRUSH HOLDER WITH FOUR ...
        (75394, ["herd", "elephant", "elephant"]),  # A herd of Elephant protecting a young Elephant.
        (112336, ["airplane", "airport terminal"]),  # A Thai airways airplane at the Bangkok Airport terminal
        (130438, ["living room", "gift"]),  # Living room decorated for Christmas with gifts galore
    ],
    # the tagger's slips that WordNet corrects
    "tagger_slips": [
        (375712, ["table", "cake", "cookie", "candy", "doughnut"]),  # A table/JJ laden/NN with cakes, cookies, ...
        (789337, ["dog", "can", "food"]),  # A dog that is looking at a can/MD of food.
        (443619, ["woman", "leather", "motorcycle"]),  # A woman wearing black leather sits/NNS on her motorcycle.
        (22065, ["sheep", "grass", "field"]),  # A sheep/JJ grazing/NN on grass in a field.
    ],
}


@pytest.mark.parametrize(
    "caption_id,expected",
    [pytest.param(cid, exp, id=f"{group}-{cid}") for group, cases in REAL_CAPTIONS.items() for cid, exp in cases],
)
def test_real_caption_nouns(nltk_data, coco_captions, caption_id, expected):
    assert caption_nouns(coco_captions[caption_id]["caption"]) == expected


def test_image_nouns_keep_caption_provenance(nltk_data, coco_captions):
    captions = _image_captions(coco_captions, 463557)
    assert extract_nouns(captions) == [
        NounOccurrence("boy", (162867, 167700, 170925, 172434)),
        NounOccurrence("couch", (162867,)),
        NounOccurrence("plate", (162867, 166080, 167700, 172434)),
        NounOccurrence("food", (162867, 166080, 167700)),
        NounOccurrence("child", (166080,)),
        NounOccurrence("lap", (166080, 167700)),
        NounOccurrence("hand", (166080,)),
        NounOccurrence("chair", (167700, 170925)),
        NounOccurrence("hot dog", (170925,)),
        NounOccurrence("shirt", (172434,)),
        NounOccurrence("hotdog", (172434,)),  # one-word spelling kept as written
    ]


def test_order_is_first_appearance_and_ids_are_sorted(nltk_data, coco_captions):
    captions = list(reversed(_image_captions(coco_captions, 54718)))
    found = extract_nouns(captions)
    # The last caption (77275) is read first now, so its nouns lead.
    assert [n.noun for n in found] == ["baby", "elephant", "rock", "elder", "family", "herd"]
    assert found[1] == NounOccurrence("elephant", (72085, 75394, 76954, 76993, 77275))
    assert found[2] == NounOccurrence("rock", (72085, 77275))


def test_every_coco_mini_image_gets_clean_nouns(nltk_data, coco_captions):
    images: dict[int, list[Caption]] = {}
    for a in coco_captions.values():
        images.setdefault(a["image_id"], []).append(Caption(a["id"], a["caption"]))
    stop = nonvisual_nouns()
    vocabulary: set[str] = set()
    for captions in images.values():
        found = extract_nouns(captions)
        assert found, captions
        ids = {c.caption_id for c in captions}
        for occ in found:
            assert occ.noun == occ.noun.lower() and occ.noun not in stop
            assert occ.noun not in nouns.FUNCTION_WORDS
            assert re.fullmatch(r"[a-z][a-z'\- ]*[a-z]", occ.noun), occ.noun
            assert occ.caption_ids == tuple(sorted(set(occ.caption_ids))) and set(occ.caption_ids) <= ids
        assert len({o.noun for o in found}) == len(found)
        vocabulary.update(o.noun for o in found)
    # Lemmas, not surface forms: no plural survives next to its singular.
    assert not {"men", "people", "women", "buses", "leaves"} & vocabulary
    assert {"person", "man", "woman", "bus", "leaf", "teddy bear", "fire hydrant"} <= vocabulary


# --- hand-written captions -----------------------------------------------------

HANDWRITTEN = [
    ("An orange cat sleeping on a couch.", ["cat", "couch"]),
    ("A plate with an orange and a banana.", ["plate", "orange", "banana"]),
    ("Two men and three women with their children.", ["man", "woman", "child"]),
    ("Mice running under the kitchen cabinets.", ["mouse", "kitchen cabinet"]),
    ("A dog with sharp teeth chewing a bone.", ["dog", "tooth", "bone"]),
    ("Geese swimming in a pond.", ["goose", "pond"]),
    ("Knives and forks on a napkin.", ["knife", "fork", "napkin"]),
    ("The man's hat is on the woman's head.", ["man", "hat", "woman", "head"]),
    ("A man wearing glasses reading a book.", ["man", "glasses", "book"]),
    ("Two glasses of wine on a table.", ["glass", "wine", "table"]),
    ("A boy in blue jeans and a red t-shirt.", ["boy", "jeans", "t-shirt"]),
    ("A man in a white shirt and black pants holding a pair of scissors.", ["man", "shirt", "pants", "scissors"]),
    ("Hot dogs with mustard on a grill.", ["hot dog", "mustard", "grill"]),
    ("A hot-dog in a bun.", ["hot dog", "bun"]),
    ("An old man sitting on a bench", ["man", "bench"]),
    ("A dog drinking water from a bowl", ["dog", "water", "bowl"]),
    ("THREE DOGS PLAYING IN THE SNOW", ["dog", "snow"]),
    ("Men playing Frisbee with their dog", ["man", "frisbee", "dog"]),
    ("a giraffe standin next to a tre", ["giraffe", "standin", "tre"]),
    ("A skier\u2019s poles in the snow", ["skier", "pole", "snow"]),
    ("", []),
    (" ... !", []),
]


@pytest.mark.parametrize("text,expected", HANDWRITTEN)
def test_handwritten_caption_nouns(nltk_data, text, expected):
    assert caption_nouns(text) == expected


def test_functions_pickle_by_reference_after_use(nltk_data):
    """Beam ships the functions to workers; loading NLTK must not make them unpicklable."""
    caption_nouns("a dog on a couch")
    assert pickle.loads(pickle.dumps(extract_nouns)) is extract_nouns
    assert pickle.loads(pickle.dumps(caption_nouns)) is caption_nouns
