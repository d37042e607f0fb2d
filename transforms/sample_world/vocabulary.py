"""The sample world's classes, colours and the words captions use for them.

Every class name is a noun that :mod:`maskmine.transforms.nouns` returns unchanged from
a caption (singular) and from its plural form (``leaves`` -> ``leaf``,
``fish`` -> ``fish``), so mined nouns and category names meet without a
mapping; ``tests/test_sample_world.py`` checks that over the whole vocabulary.
Names the tagger misreads ("key", "cross") or the stoplist drops ("shape")
were left out on purpose. Synonyms are nouns the noun stage also keeps, each
naming exactly one class; :func:`noun_to_class` maps them back when scoring.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SHAPE, OBJECT, STUFF = "shape", "object", "stuff"


@dataclass(frozen=True)
class ClassSpec:
    """One category: its COCO id is its 1-based position in :data:`CLASSES`."""

    name: str
    kind: str  # shape, object or stuff (stuff: a band of the scene such as sky)
    plural: str = ""  # "" means name + "s"
    synonyms: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()  # colour names the main part may take; () = any of OBJECT_COLOURS
    patterned: bool = True  # the main part may be striped or spotted

    @property
    def plural_form(self) -> str:
        return self.plural or self.name + "s"


# Named colours (RGB); drawing jitters them a little so no two look the same.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
OBJECT_COLOURS = tuple(COLOURS)

_ANY: tuple[str, ...] = ()
CLASSES: tuple[ClassSpec, ...] = (
    # flat geometric shapes
    ClassSpec("circle", SHAPE, synonyms=("disk",)),
    ClassSpec("square", SHAPE),
    ClassSpec("triangle", SHAPE),
    ClassSpec("star", SHAPE),
    ClassSpec("heart", SHAPE),
    ClassSpec("diamond", SHAPE, synonyms=("rhombus",)),
    ClassSpec("ring", SHAPE, synonyms=("hoop",)),
    ClassSpec("crescent", SHAPE),
    ClassSpec("hexagon", SHAPE),
    # simple drawn objects
    ClassSpec("house", OBJECT, synonyms=("cottage",), colours=("red", "yellow", "white", "blue", "orange", "pink", "brown"), patterned=False),
    ClassSpec("tree", OBJECT, colours=("green",), patterned=False),
    ClassSpec("flower", OBJECT, colours=("red", "blue", "yellow", "purple", "pink", "white", "orange"), patterned=False),
    ClassSpec("sun", OBJECT, colours=("yellow", "orange"), patterned=False),
    ClassSpec("cloud", OBJECT, colours=("white", "gray"), patterned=False),
    ClassSpec("car", OBJECT, synonyms=("automobile",), patterned=False),
    ClassSpec("boat", OBJECT, synonyms=("sailboat",), patterned=False),
    ClassSpec("fish", OBJECT, plural="fish"),
    ClassSpec("bird", OBJECT, patterned=False),
    ClassSpec("umbrella", OBJECT),
    ClassSpec("cup", OBJECT, synonyms=("mug",)),
    ClassSpec("kite", OBJECT),
    ClassSpec("mushroom", OBJECT, colours=("red", "brown", "orange"), patterned=False),
    ClassSpec("ladder", OBJECT, colours=("brown", "gray", "yellow", "red"), patterned=False),
    ClassSpec("apple", OBJECT, colours=("red", "green", "yellow"), patterned=False),
    ClassSpec("balloon", OBJECT),
    ClassSpec("bottle", OBJECT, colours=("green", "blue", "brown"), patterned=False),
    ClassSpec("candle", OBJECT),
    ClassSpec("leaf", OBJECT, plural="leaves", colours=("green", "orange", "yellow", "brown", "red"), patterned=False),
    ClassSpec("arrow", OBJECT),
    ClassSpec("fence", OBJECT, colours=("brown", "white", "gray"), patterned=False),
    ClassSpec("flag", OBJECT, synonyms=("banner",)),
    ClassSpec("checkerboard", OBJECT, colours=("black", "red", "blue", "green"), patterned=False),
    ClassSpec("mountain", OBJECT, synonyms=("hill",), colours=("gray", "brown", "purple"), patterned=False),
    ClassSpec("envelope", OBJECT, colours=("white", "yellow", "pink", "blue", "brown"), patterned=False),
    ClassSpec("clock", OBJECT, colours=("red", "blue", "black", "green", "orange"), patterned=False),
    # stuff bands
    ClassSpec("sky", STUFF, plural="sky", colours=("blue",), patterned=False),
    ClassSpec("grass", STUFF, plural="grass", colours=("green",), patterned=False),
    ClassSpec("water", STUFF, plural="water", synonyms=("sea",), colours=("blue",), patterned=False),
    ClassSpec("sand", STUFF, plural="sand", synonyms=("beach",), colours=("yellow",), patterned=False),
    ClassSpec("road", STUFF, plural="road", synonyms=("street",), colours=("gray",), patterned=False),
    ClassSpec("snow", STUFF, plural="snow", colours=("white",), patterned=False),
    ClassSpec("wall", STUFF, plural="wall", colours=("red",), patterned=False),
)

# Nouns captions use that name nothing in the image, as real captions do
# ("a cartoon of...", "on a table"); they are mined but match no category.
DISTRACTOR_NOUNS: tuple[str, ...] = (
    "cartoon", "drawing", "illustration", "painting", "sticker", "poster", "toy", "table", "paper",
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BY_NAME: dict[str, ClassSpec] = {c.name: c for c in CLASSES}
THINGS: tuple[ClassSpec, ...] = tuple(c for c in CLASSES if c.kind != STUFF)
STUFFS: tuple[ClassSpec, ...] = tuple(c for c in CLASSES if c.kind == STUFF)


def category_id(name: str) -> int:
    """COCO category id (1-based, vocabulary order); semantic label = id - 1."""
    return CLASS_NAMES.index(name) + 1


def noun_to_class() -> dict[str, str]:
    """Every noun the captions use for a class (name or synonym) -> class name."""
    out: dict[str, str] = {}
    for spec in CLASSES:
        out[spec.name] = spec.name
        for syn in spec.synonyms:
            out[syn] = spec.name
    return out


def coco_categories() -> list[dict]:
    return [
        {"id": i + 1, "name": c.name, "supercategory": c.kind, "isthing": int(c.kind != STUFF)}
        for i, c in enumerate(CLASSES)
    ]


@dataclass(frozen=True)
class Vocabulary:
    """What README.json records about the set's words."""

    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    synonyms: dict[str, str] = field(default_factory=lambda: {k: v for k, v in noun_to_class().items() if k != v})
    distractors: list[str] = field(default_factory=lambda: list(DISTRACTOR_NOUNS))
