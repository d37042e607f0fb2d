"""Visual nouns of COCO-style captions with NLTK (stage 2 of mining).

OVSeg pairs every noun of an image's captions with a mask proposal, so this
module decides which words are nouns worth a mask: NLTK tokens tagged NN/NNS by
the averaged perceptron tagger, lemmatised with WordNet, minus nouns that name
no object (``data/nonvisual_nouns.txt``). The tagger is trained on news text and
often errs on short captions, so a few WordNet-backed corrections sit on top of
the tags; each is a small function below with the captions that motivated it.

Decisions worth knowing (they change the vocabulary):

* Two-word nouns WordNet knows ("hot dog", "teddy bear", "parking lot") are one
  noun, head lemmatised ("hot dogs" -> "hot dog"); so are spaced spellings of
  one-word nouns, kept as written ("tooth brushes" -> "tooth brush") and a few
  COCO class names WordNet lacks ("stop sign"). Multiword nouns that name no
  object ("cross country", "baseball game") are dropped whole.
* Irregular plurals follow WordNet (men -> man, teeth -> tooth, leaves -> leaf);
  "people" -> "person" so the vocabulary has one word for COCO's person class.
  Pluralia tantum stay plural (scissors, pants, jeans, glasses worn as eyewear).
* Words WordNet does not know (typos, "skatepark") are kept as tagged, lower
  case, never corrected; words it knows only as verbs/adjectives are dropped.
* A colour or mainly-adjective word before a noun is a modifier, not a noun
  ("an orange cat" -> cat, "a plate with an orange" -> orange).

NLTK data (tagger + WordNet) is loaded lazily once per process; nothing is
opened at import, so the functions pickle by reference into Beam workers.
"""
from __future__ import annotations

import functools
import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

from maskmine.transforms.errors import UserError
from maskmine.transforms.records import Caption, NounOccurrence

TAGGER_RESOURCE = "taggers/averaged_perceptron_tagger_eng/"  # trailing slash: also finds a zipped copy
WORDNET_RESOURCE = "corpora/wordnet/"
_DOWNLOAD_NAMES = {TAGGER_RESOURCE: "averaged_perceptron_tagger_eng", WORDNET_RESOURCE: "wordnet"}
NONVISUAL_FILE = "nonvisual_nouns.txt"

NOUN_TAGS = frozenset({"NN", "NNS"})
PROPER_TAGS = frozenset({"NNP", "NNPS"})
ADJ_TAGS = frozenset({"JJ", "JJR", "JJS"})
# Tags of a word that may start a two-word noun ("cutting board", "hot dog").
_COMPOUND_FIRST_TAGS = NOUN_TAGS | PROPER_TAGS | ADJ_TAGS | {"VBG", "VBN", "VBD", "RB"}
# Tags that make the second word a verb of the clause, not a compound's head.
_FINITE_VERB_TAGS = frozenset({"VBZ", "VBD", "VBP", "MD"})
# Tags the tagger gives nouns it misreads, rescued when WordNet agrees.
_RESCUE_TAGS = frozenset({"VB", "VBP", "VBD", "VBN", "MD", "RB", "IN"})
# ... and, right after an article, verbs/modals that must be nouns ("a can/MD of").
_AFTER_ARTICLE_TAGS = frozenset({"VB", "VBP", "MD"})
_ARTICLES = frozenset({"a", "an", "the"})
# After "'s"/"his" comes the possessed noun whatever the tag, unless it is a modifier.
_POSSESSIVE_TAGS = frozenset({"POS", "PRP$"})
_MODIFIER_TAGS = ADJ_TAGS | {"VBG", "VBN", "CD", "RB"}
# Middle word of three-word WordNet nouns ("body of water"). "and" is left out:
# "cup and saucer", "bacon and eggs" are two objects each.
_TRIGRAM_LINKS = frozenset({"of"})

# Closed-class words the tagger sometimes tags as nouns ("beside/NN").
# "can" is left out on purpose: "a can of dog food" is a visible can.
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those some any each every other another such all
    both either neither none no not nor and or but so yet if than then as while
    because though although about above across after against along among around
    at atop before behind below beneath beside besides between beyond by down
    during except for from in inside into near next of off on onto opposite out
    outside over past per through throughout to toward towards under underneath
    until up upon via with within without i me my mine you your yours he him his
    she her hers it its we us our ours they them their theirs myself yourself
    himself herself itself ourselves themselves who whom whose which what where
    when why how there here is are was were be been being am has have had do
    does did could will would shall should may might must very too also just
    only yes
    """.split()
)

# Colour words: before a noun they are adjectives even when tagged NN
# ("a pink wall", "a blue and white cup"), and they never start a WordNet
# compound ("yellow jacket" is a wasp in WordNet, "a yellow jacket" is a coat).
COLOURS = frozenset(
    """
    white black blue red green yellow orange pink purple brown grey gray beige
    tan turquoise maroon teal magenta cyan crimson scarlet violet lavender navy
    gold golden silver bronze olive lime cream ivory khaki
    """.split()
)

# Size/age adjectives that make compositional phrases, not names: WordNet's
# "big cat" (a lion) and "old man" (a father) should stay "cat" and "man".
_COMPOSITIONAL_ADJECTIVES = frozenset(
    "big small little large old young tiny huge giant new baby great left right".split()
)

# COCO category names WordNet lacks as one noun; kept whole like WordNet compounds.
EXTRA_COMPOUNDS = frozenset({"stop sign", "potted plant", "sports ball", "wine glass", "cell phone"})

# Plural nouns whose singular means something else (pant = a gasp, "the
# woods" are a forest, "greens" are vegetables, not a colour).
PLURALIA_TANTUM = frozenset(
    """
    pants jeans shorts trousers slacks scissors shears tweezers pliers tongs
    clothes goggles sunglasses eyeglasses spectacles binoculars overalls pajamas
    pyjamas tights leggings suspenders headphones earphones earbuds bleachers
    fries woods goods greens
    """.split()
)
# One word per class for COCO's person category.
LEMMA_OVERRIDES = {"people": "person", "persons": "person", "peoples": "person"}
# "glasses" is eyewear after these words, drinking glasses otherwise
# ("a man wearing glasses" vs "two shot glasses", "glasses of wine").
_EYEWEAR_CUES = frozenset(
    "wearing wears wear wore with in his her their my your reading sun safety".split()
)

# WordNet lexicographer files of things a mask can cover; an -ing noun that is
# also a verb form is kept only with such a sense ("building" yes,
# "standing"/"grazing"/"skiing" no).
CONCRETE_LEXNAMES = frozenset(
    {
        "noun.artifact",
        "noun.animal",
        "noun.body",
        "noun.food",
        "noun.object",
        "noun.person",
        "noun.plant",
        "noun.substance",
        "noun.location",
        "noun.group",
    }
)
# Senses that make a multiword noun or a doubtful tag worth keeping: the
# concrete ones plus signs and displays ("traffic light" is noun.communication).
VISIBLE_LEXNAMES = CONCRETE_LEXNAMES | {"noun.communication"}

_WORD_RE = re.compile(r"[^\W\d_](?:[\w'\-]*[^\W\d_])?")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-"})

_ready = False
# maskmine's packaged NLTK data folder: the fallback after NLTK_DATA and NLTK's usual folders.
BUNDLED_NLTK_DATA = str(Path(__file__).resolve().parent / "data" / "nltk_data")


# --------------------------------------------------------------------------
# NLTK resources


def ensure_nltk_data() -> None:
    """Find and load NLTK's tagger and WordNet, or fail with one clear line.

    Search order: ``NLTK_DATA`` (also one set after NLTK was imported, which is
    how Beam workers usually receive it), NLTK's usual folders, then the zipped
    copy shipped inside maskmine. Both resources are loaded here, so a damaged
    copy is the same one-line error as a missing one, before any work starts.
    """
    global _ready
    if _ready:
        return
    import nltk

    for folder in reversed(os.environ.get("NLTK_DATA", "").split(os.pathsep)):
        if folder and folder not in nltk.data.path:
            nltk.data.path.insert(0, folder)
    # The copy shipped inside maskmine (zipped tagger and WordNet, with their licences) is the last resort.
    if BUNDLED_NLTK_DATA not in nltk.data.path:
        nltk.data.path.append(BUNDLED_NLTK_DATA)
    for resource, load in ((TAGGER_RESOURCE, _load_tagger), (WORDNET_RESOURCE, _load_wordnet)):
        location = resource
        try:
            location = nltk.data.find(resource)
            load()
        except LookupError:
            raise UserError(
                f"NLTK resource '{resource.rstrip('/')}' not found in {list(nltk.data.path)} "
                f"(the last is maskmine's own copy: reinstall maskmine if it is gone); set NLTK_DATA "
                f"to a folder that holds it or run 'python -m nltk.downloader {_DOWNLOAD_NAMES[resource]}'"
            ) from None
        except Exception as exc:  # noqa: BLE001 - zip, JSON, WordNet index errors all mean a damaged copy
            raise UserError(
                f"NLTK resource '{resource.rstrip('/')}' at {location} cannot be read "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'damaged'}): "
                f"replace that copy or point NLTK_DATA at a good one"
            ) from None
    _ready = True


def _load_tagger() -> None:
    import nltk

    nltk.pos_tag(["a", "dog"])


def _load_wordnet() -> None:
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    wordnet.morphy("dogs", wordnet.NOUN)


def _wordnet():
    ensure_nltk_data()
    from nltk.corpus import wordnet

    return wordnet


@functools.cache
def nonvisual_nouns() -> frozenset[str]:
    """The documented stoplist of nouns that name no maskable object."""
    text = resources.files("maskmine.transforms").joinpath("data", NONVISUAL_FILE).read_text(encoding="utf-8")
    words = set()
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip().lower()
        if word:
            words.add(word)
    return frozenset(words)


# --------------------------------------------------------------------------
# WordNet look-ups, cached per word (captions repeat a small vocabulary)


@functools.lru_cache(maxsize=None)
def _senses(word: str, pos: str) -> tuple:
    return tuple(_wordnet().synsets(word, pos))


def _has_pos(word: str, pos: str) -> bool:
    if pos == "a":
        return bool(_senses(word, "a") or _senses(word, "s"))
    return bool(_senses(word, pos))


@functools.lru_cache(maxsize=None)
def _known(word: str) -> bool:
    return any(_has_pos(word, pos) for pos in ("n", "v", "a", "r"))


@functools.lru_cache(maxsize=None)
def _sense_count(word: str, pos: str) -> int:
    """How often WordNet's tagged corpus used ``word`` in this part of speech."""
    wn = _wordnet()
    total = 0
    for p in ("a", "s") if pos == "a" else (pos,):
        base = wn.morphy(word, p)
        if base is None:
            continue
        for synset in wn.synsets(base, p):
            total += sum(lemma.count() for lemma in synset.lemmas() if lemma.name().lower() == base)
    return total


@functools.lru_cache(maxsize=None)
def _lowercase_noun(name: str) -> str | None:
    """WordNet's noun lemma for ``name`` when it is a common (lower-case) noun.

    ``name`` uses underscores for spaces. Proper nouns ("White_House",
    "Bangkok", "Christmas") have capitalised lemmas and give None.
    """
    wn = _wordnet()
    for base in wn._morphy(name, "n"):
        for synset in wn.synsets(base, "n"):
            if any(lemma.name() == base for lemma in synset.lemmas()):
                return base
    return None


@functools.lru_cache(maxsize=None)
def _common_thing(word: str) -> bool:
    """A capitalised caption word that still names a kind of thing.

    Lower-case WordNet nouns ("Elephant") and capitalised trademarks that are
    things ("Frisbee", an artifact); not places, people, holidays or languages
    ("Bangkok" is an instance, "Thai" a person/language, "Christmas" a time).
    """
    base = _lowercase_noun(word)
    if base is not None:
        return _visible(base)
    things = CONCRETE_LEXNAMES - {"noun.person", "noun.group", "noun.location"}
    return any(
        s.lexname() in things and not s.instance_hypernyms() for s in _senses(word, "n")
    )


@functools.lru_cache(maxsize=None)
def _lemma(word: str) -> str:
    """Singular noun lemma, only where WordNet knows it; unknown words unchanged."""
    if word in LEMMA_OVERRIDES:
        return LEMMA_OVERRIDES[word]
    if word in PLURALIA_TANTUM:
        return word
    wn = _wordnet()
    irregular = wn._exception_map["n"].get(word)
    if irregular:
        return irregular[0]
    bases = wn._morphy(word, "n")
    if not bases:
        return word
    others = [b for b in bases if b != word]
    return others[0] if others else bases[0]


def _visible(base: str) -> bool:
    """Some noun sense of this WordNet lemma is a thing one could outline."""
    return any(s.lexname() in VISIBLE_LEXNAMES for s in _senses(base, "n"))


@functools.lru_cache(maxsize=None)
def _compound(first: str, second: str, first_is_adj: bool) -> tuple[str, bool] | None:
    """The noun two tokens spell together and whether it is visible, or None.

    Found as a WordNet noun ("hot_dog"), as a spaced spelling of a one-word
    WordNet noun ("tooth brush"; emitted as written, head lemmatised), or in
    EXTRA_COMPOUNDS. Non-visible ones ("cross country", "baseball game") are
    returned too: the caller drops them instead of splitting them.
    """
    if first in COLOURS or (first_is_adj and first in _COMPOSITIONAL_ADJECTIVES):
        return None
    spaced = f"{first} {_lemma(second)}"
    if spaced in EXTRA_COMPOUNDS:
        return spaced, True
    base = _lowercase_noun(f"{first}_{second}")
    if base is not None:
        if first_is_adj and all(s.lexname() == "noun.person" for s in _senses(base, "n")):
            return None  # "old man", "young woman": descriptions, not names
        return base.replace("_", " "), _visible(base)
    if len(first) >= 3 and len(second) >= 3 and first.isalpha() and second.isalpha():
        closed = _lowercase_noun(first + second)
        if closed is not None:
            return spaced, _visible(closed)
    return None


@functools.lru_cache(maxsize=None)
def _trigram(first: str, link: str, last: str) -> str | None:
    """A visible three-word WordNet noun: "body of water" (not "pair of scissors")."""
    if first in COLOURS or first in nonvisual_nouns():
        return None
    base = _lowercase_noun(f"{first}_{link}_{last}")
    return base.replace("_", " ") if base is not None and _visible(base) else None


@functools.lru_cache(maxsize=None)
def _other_multiword(first: str, second: str) -> bool:
    """Two tokens WordNet knows together only as a non-noun ("ad infinitum")."""
    senses = _wordnet().synsets(f"{first}_{second}")
    return bool(senses) and all(s.pos() != "n" for s in senses)


@functools.lru_cache(maxsize=None)
def _hyphen_compound(word: str) -> str | None:
    """"hot-dog" -> "hot dog" when WordNet knows the spaced noun but not the hyphenated one."""
    if "-" not in word or _has_pos(word, "n"):
        return None
    base = _lowercase_noun(word.replace("-", "_"))
    return base.replace("_", " ") if base else None


@functools.lru_cache(maxsize=None)
def _is_verb_form(word: str) -> bool:
    """An -ing form of a WordNet verb ("drinking"; not "string", "ring", "swing")."""
    return word.endswith("ing") and any(base != word for base in _wordnet()._morphy(word, "v"))


@functools.lru_cache(maxsize=None)
def _is_activity(word: str) -> bool:
    """An -ing verb form whose noun senses are all acts/states ("grazing")."""
    if not _is_verb_form(word):
        return False
    lexnames = {s.lexname() for s in _senses(word, "n")}
    return bool(lexnames) and not (lexnames & CONCRETE_LEXNAMES)


@functools.lru_cache(maxsize=None)
def _mostly_verb(word: str) -> bool:
    """A plural that corpus use says is a verb ("walks", "poses"), unless a living thing ("bears")."""
    nouns, verbs = _sense_count(word, "n"), _sense_count(word, "v")
    if verbs < 5 or verbs < 3 * nouns:
        return False
    senses = _senses(word, "n")
    return not (senses and senses[0].lexname() in {"noun.animal", "noun.person", "noun.plant", "noun.food"})


@functools.lru_cache(maxsize=None)
def _abstract_misreading(word: str) -> bool:
    """A word tagged noun whose noun senses are all abstract and rarer than its
    verb/adjective uses ("rubs", "pecks", "lit", "ready"): a tagging slip."""
    base = _wordnet().morphy(word, "n") or word
    if _visible(base):
        return False
    other = _sense_count(word, "v") + _sense_count(word, "a") + _sense_count(word, "r")
    return other > _sense_count(word, "n")


@functools.lru_cache(maxsize=None)
def _mostly_adjective(word: str) -> bool:
    return word in COLOURS or (_has_pos(word, "a") and _sense_count(word, "a") > _sense_count(word, "n"))


# --------------------------------------------------------------------------
# Caption -> nouns


def _prepare(text: str) -> list[str]:
    """Tokens with sentence-start and ALL-CAPS casing undone (they make the tagger say NNP)."""
    import nltk

    text = " ".join(text.translate(_QUOTES).split())
    if not any(ch.islower() for ch in text):
        text = text.lower()
    tokens = nltk.word_tokenize(text, preserve_line=True)
    if tokens and tokens[0][:1].isupper() and not tokens[0].isupper():
        tokens[0] = tokens[0].lower()
    return tokens


def _tag(tokens: list[str]) -> list[tuple[str, str]]:
    import nltk

    ensure_nltk_data()
    return nltk.pos_tag(tokens)


class _Caption:
    """One tagged caption and the rules that read it."""

    def __init__(self, tagged: list[tuple[str, str]]):
        self.words = [w.lower() for w, _ in tagged]
        self.tags = [t for _, t in tagged]

    def word(self, i: int) -> str:
        return self.words[i] if 0 <= i < len(self.words) else ""

    def tag(self, i: int) -> str:
        return self.tags[i] if 0 <= i < len(self.tags) else ""

    def is_word(self, i: int) -> bool:
        w = self.word(i)
        return len(w) >= 2 and w not in FUNCTION_WORDS and _WORD_RE.fullmatch(w) is not None

    def compound_at(self, i: int) -> tuple[str, bool] | None:
        """Tokens i, i+1 as one noun: "hot dog", "cutting board", "teddy bear/IN"."""
        if not (self.is_word(i) and self.is_word(i + 1)):
            return None
        first_tag, second_tag = self.tag(i), self.tag(i + 1)
        if first_tag not in _COMPOUND_FIRST_TAGS or second_tag in _FINITE_VERB_TAGS:
            return None
        if _is_verb_form(self.word(i)) and self.subject_before(i):
            return None  # "a dog drinking/NN water": the -ing word is the clause's verb
        return _compound(self.word(i), self.word(i + 1), first_tag in ADJ_TAGS)

    def subject_before(self, i: int) -> bool:
        """Token i-1 is a pronoun or a noun that cannot be a modifier.

        "a dog drinking water" (verb + object) versus "a concrete swimming
        pool" (modifier + compound): only the second noun has adjective uses.
        """
        prev, tag = self.word(i - 1), self.tag(i - 1)
        if tag.startswith("PRP"):
            return True
        return tag in NOUN_TAGS | PROPER_TAGS and not _has_pos(prev, "a")

    def unit_at(self, i: int) -> tuple[str | None, int]:
        """The noun starting at token i (or None) and how many tokens it spans."""
        if self.tag(i) in _COMPOUND_FIRST_TAGS and self.word(i + 1) in _TRIGRAM_LINKS:
            if self.is_word(i) and self.is_word(i + 2):
                found = _trigram(self.word(i), self.word(i + 1), self.word(i + 2))
                if found is not None:
                    return found, 3
        compound = self.compound_at(i)
        if compound is not None:
            text, visible = compound
            if visible:
                return text, 2
            after = self.compound_at(i + 1)  # "professional tennis player"
            if after is None or not after[1]:
                return None, 2  # "cross country", "baseball game": not an object, not two
        elif self.is_word(i) and self.is_word(i + 1) and _other_multiword(self.word(i), self.word(i + 1)):
            return None, 2  # "ad infinitum"
        return self.noun_at(i), 1

    def is_noun(self, i: int) -> bool:
        """The tag, corrected where WordNet clearly disagrees with the tagger."""
        w, tag = self.word(i), self.tag(i)
        if tag in NOUN_TAGS:
            return True
        if self.tag(i - 1) in _POSSESSIVE_TAGS and tag not in _MODIFIER_TAGS:
            return _has_pos(w, "n") or _hyphen_compound(w) is not None  # "the man's hat/WP"
        if tag in PROPER_TAGS:  # "Elephant", "Frisbee" mid-caption, but not "Bangkok"/"Christmas"
            return _common_thing(w)
        if tag in ADJ_TAGS:  # "a table/JJ full of food", "a couch/JJ", "a hot-dog/JJ"
            return (_has_pos(w, "n") and not _has_pos(w, "a")) or _hyphen_compound(w) is not None
        if tag in _RESCUE_TAGS:  # "a can/MD of food", "stove top oven/RB"
            if not _has_pos(w, "n"):
                return False
            if tag in _AFTER_ARTICLE_TAGS and self.word(i - 1) in _ARTICLES and not _has_pos(w, "r"):
                return True
            return not (_has_pos(w, "v") or _has_pos(w, "a") or _has_pos(w, "r"))
        return False

    def modifies_next_noun(self, i: int) -> bool:
        """Word i is an adjective of a following noun: "a blue and red wall", "a pink wall"."""
        j = i + 1
        while j < len(self.words):
            tag, w = self.tag(j), self.word(j)
            if tag in NOUN_TAGS:
                return True
            if tag in ADJ_TAGS or tag == "VBN" or w in COLOURS:
                j += 1
            elif tag in {"CC", ","} and (self.tag(j + 1) in ADJ_TAGS or self.word(j + 1) in COLOURS):
                j += 1
            else:
                return False
        return False

    def verb_after_subject(self, i: int) -> bool:
        """"a panda bear walks/NNS inside": a plural that reads as the clause's verb."""
        if self.tag(i) != "NNS" or not self.is_noun(i - 1):
            return False
        if self.tag(i + 1) not in {"IN", "DT", "RP", "TO", "RB", "PRP$", "PRP"}:
            return False
        return _mostly_verb(self.word(i))

    def noun_at(self, i: int) -> str | None:
        """The lemma of token i if it is a visual noun on its own."""
        if not self.is_word(i) or not self.is_noun(i):
            return None
        w = self.word(i)
        hyphen = _hyphen_compound(w)
        if hyphen is not None:
            return hyphen
        if _known(w) and (not _has_pos(w, "n") or _abstract_misreading(w)):
            return None  # "sits/NNS", "sideways/NNS", "lone/NN", "rubs/NN": not nouns here
        if _mostly_adjective(w) and self.modifies_next_noun(i):
            return None
        if self.verb_after_subject(i):
            return None
        if w == "glasses":
            eyewear = self.word(i - 1) in _EYEWEAR_CUES and self.word(i + 1) != "of"
            return "glasses" if eyewear else "glass"
        lemma = _lemma(w)
        return None if _is_activity(lemma) else lemma

    def nouns(self) -> list[str]:
        out: list[str] = []
        stop = nonvisual_nouns()
        i = 0
        while i < len(self.words):
            noun, width = self.unit_at(i)
            i += width
            if noun is not None and noun not in stop:
                out.append(noun)
        return out


def caption_nouns(text: str) -> list[str]:
    """Visual nouns of one caption, in order, with repeats."""
    tokens = _prepare(text)
    if not tokens:
        return []
    return _Caption(_tag(tokens)).nouns()


def extract_nouns(captions: Sequence[Caption]) -> list[NounOccurrence]:
    """Unique nouns of one image in order of first appearance, with the captions that said them."""
    sources: dict[str, set[int]] = {}
    for caption in captions:
        for noun in caption_nouns(caption.text):
            sources.setdefault(noun, set()).add(caption.caption_id)
    return [NounOccurrence(noun=noun, caption_ids=tuple(sorted(ids))) for noun, ids in sources.items()]
