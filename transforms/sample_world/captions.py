"""A small caption grammar: five varied captions per scene, like COCO's annotators.

Captions name objects with adjectives (colour, size, pattern), counts with
plural forms (irregular ones included: leaves, fish), spatial relations
computed from the scene (above, to the left of, in front of, on the grass),
occasional synonyms ("automobile", "sea") and nouns naming nothing in the
image ("a cartoon of...", "on a table"). Each caption records which nouns the
noun stage should find in it, so tests can check the grammar against NLTK.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskmine.transforms.sample_world.scene import PLAIN, Scene, SceneObject
from maskmine.transforms.sample_world.vocabulary import BY_NAME, DISTRACTOR_NOUNS, STUFF

COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
STUFF_PREPOSITIONS = {
    "sky": ("in the sky",),
    "grass": ("on the grass", "in the grass"),
    "water": ("in the water", "on the water"),
    "sand": ("on the sand",),
    "road": ("on the road",),
    "snow": ("in the snow", "on the snow"),
    "wall": ("in front of a wall", "by the wall"),
}
STUFF_SYNONYM_PHRASES = {"water": ("on the sea", "by the sea"), "sand": ("on the beach",), "road": ("on the street",)}
LEADS = ("", "", "", "a picture of ", "a photo of ", "an image of ", "a close up of ")
DISTRACTOR_LEADS = {
    "cartoon": "a cartoon of ",
    "drawing": "a drawing of ",
    "illustration": "an illustration of ",
    "painting": "a painting of ",
    "sticker": "a sticker showing ",
    "poster": "a poster with ",
}
DISTRACTOR_TAILS = {"toy": " next to a toy", "table": " on a table", "paper": " on white paper"}


@dataclass
class CaptionText:
    text: str
    nouns: list[str] = field(default_factory=list)  # what the noun stage should return (lemmas)


@dataclass
class _Group:
    """Objects of one class mentioned together ("three red stars")."""

    name: str
    members: list[SceneObject]

    @property
    def count(self) -> int:
        return len(self.members)

    def centre(self) -> tuple[float, float]:
        xs, ys = zip(*(m.centre() for m in self.members))
        return float(np.mean(xs)), float(np.mean(ys))


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def size_word(rng: np.random.Generator, obj: SceneObject, image_area: int) -> str | None:
    frac = obj.full_area / image_area
    if frac < 0.02:
        return str(rng.choice(["small", "tiny", "little"]))
    if frac > 0.25:
        return str(rng.choice(["large", "big", "huge"]))
    if frac > 0.12:
        return str(rng.choice(["large", "big"]))
    return None


class Grammar:
    """Writes the captions of one scene from one random generator."""

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.scene = scene
        self.rng = rng
        self.area = scene.width * scene.height
        by_name: dict[str, list[SceneObject]] = {}
        for obj in scene.things():
            by_name.setdefault(obj.name, []).append(obj)
        self.groups = [_Group(n, m) for n, m in by_name.items()]
        self.stuff = scene.stuff()

    # ---------------------------------------------------------------- phrases

    def noun_phrase(self, group: _Group, nouns: list[str], definite: bool = False) -> str:
        """"a small striped red star", "the automobile", "three fish", "two green leaves"."""
        rng = self.rng
        spec = BY_NAME[group.name]
        adjs: list[str] = []
        if group.count == 1:
            obj = group.members[0]
            noun = spec.name
            if spec.synonyms and rng.random() < 0.15:
                noun = str(rng.choice(spec.synonyms))
            if rng.random() < 0.35:
                size = size_word(rng, obj, self.area)
                if size:
                    adjs.append(size)
            if obj.pattern != PLAIN and rng.random() < 0.7:
                adjs.append(obj.pattern)
            if obj.colour and rng.random() < 0.65:
                adjs.append(obj.colour)
            words = " ".join(adjs + [noun])
            det = "the" if definite else article(words)
            nouns.append(noun)
            return f"{det} {words}"
        colours = {m.colour for m in group.members}
        if len(colours) == 1 and rng.random() < 0.6:
            adjs.append(next(iter(colours)))  # type: ignore[arg-type]
        count = COUNT_WORDS.get(group.count, "many")
        if rng.random() < 0.15:
            count = str(rng.choice(["some", "several"]))
        nouns.append(spec.name)
        lead = "the " if definite and count not in ("some", "several") else ""
        return f"{lead}{count} " + " ".join(adjs + [spec.plural_form])

    def listing(self, groups: list[_Group], nouns: list[str]) -> str:
        phrases = [self.noun_phrase(g, nouns) for g in groups]
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]

    def relation(self, a: _Group, b: _Group) -> str:
        """Where ``a`` is relative to ``b``, from their centres (and depth order)."""
        if a.count == 1 and b.count == 1 and self._occludes(a.members[0], b.members[0]) and self.rng.random() < 0.5:
            return "in front of"
        if a.count == 1 and b.count == 1 and self._occludes(b.members[0], a.members[0]) and self.rng.random() < 0.5:
            return "behind"
        (ax, ay), (bx, by) = a.centre(), b.centre()
        dx, dy = ax - bx, ay - by
        if abs(dy) > abs(dx):
            return "above" if dy < 0 else str(self.rng.choice(["below", "under"]))
        if abs(dx) < 0.15 * self.scene.width or self.rng.random() < 0.3:
            return str(self.rng.choice(["next to", "near", "beside"]))
        return "to the left of" if dx < 0 else "to the right of"

    def _occludes(self, front: SceneObject, back: SceneObject) -> bool:
        objs = self.scene.objects
        if objs.index(front) < objs.index(back):
            return False
        fx, fy, fw, fh = front.bbox()
        bx, by, bw, bh = back.bbox()
        return fx < bx + bw and bx < fx + fw and fy < by + bh and by < fy + fh

    def stuff_of(self, group: _Group) -> SceneObject | None:
        """The stuff band under the group's first member (what it stands on or floats in)."""
        obj = group.members[0]
        ys, xs = np.nonzero(obj.mask)
        x, y = int(np.median(xs)), int(ys.max())
        for stuff in reversed(self.stuff):
            sy = np.nonzero(stuff.mask[:, max(0, x - 3) : x + 4].any(1))[0]
            if sy.size and sy.min() <= y <= sy.max():
                return stuff
        return None

    def stuff_phrase(self, stuff: SceneObject, nouns: list[str]) -> str:
        if stuff.name in STUFF_SYNONYM_PHRASES and self.rng.random() < 0.25:
            phrase = str(self.rng.choice(STUFF_SYNONYM_PHRASES[stuff.name]))
            nouns.append(phrase.split()[-1])
            return phrase
        nouns.append(stuff.name)
        return str(self.rng.choice(STUFF_PREPOSITIONS[stuff.name]))

    # ---------------------------------------------------------------- captions

    def pick(self, k: int) -> list[_Group]:
        order = self.rng.permutation(len(self.groups))
        return [self.groups[i] for i in order[: min(k, len(self.groups))]]

    def inventory(self) -> CaptionText:
        nouns: list[str] = []
        text = str(self.rng.choice(LEADS)) + self.listing(self.pick(4), nouns)
        if self.stuff and self.rng.random() < 0.5:
            stuff = self.stuff[int(self.rng.integers(len(self.stuff)))]
            text += " " + self.stuff_phrase(stuff, nouns)
        return CaptionText(text, nouns)

    def related(self) -> CaptionText:
        nouns: list[str] = []
        if len(self.groups) < 2:
            return self.with_stuff()
        a, b = self.pick(2)
        rel = self.relation(a, b)
        first = self.noun_phrase(a, nouns)
        verb = "is " if a.count == 1 else "are "
        verb = verb if self.rng.random() < 0.4 else ""
        text = f"{first} {verb}{rel} {self.noun_phrase(b, nouns, definite=self.rng.random() < 0.4)}"
        if self.rng.random() < 0.3:
            text = ("there is " if a.count == 1 else "there are ") + text
        return CaptionText(text, nouns)

    def with_stuff(self) -> CaptionText:
        nouns: list[str] = []
        groups = self.pick(2)
        if not groups:
            return self.stuff_only()
        if len(groups) == 2 and self.rng.random() < 0.5:
            subject = self.listing(groups, nouns)
        else:
            subject = self.noun_phrase(groups[0], nouns)
        stuff = self.stuff_of(groups[0])
        if stuff is not None:
            return CaptionText(f"{subject} {self.stuff_phrase(stuff, nouns)}", nouns)
        tail = str(self.rng.choice([" on a plain background", " against a colourful background", " alone", ""]))
        return CaptionText(subject + tail, nouns)

    def stuff_only(self) -> CaptionText:
        nouns: list[str] = []
        if not self.stuff:
            return CaptionText("an empty picture", nouns)
        words = []
        for stuff in self.stuff:
            nouns.append(stuff.name)
            words.append(f"the {stuff.name}")
        return CaptionText("a view of " + " and ".join(words), nouns)

    def with_distractor(self) -> CaptionText:
        nouns: list[str] = []
        groups = self.pick(2)
        if not groups:
            return self.stuff_only()
        word = str(self.rng.choice(DISTRACTOR_NOUNS))
        body = self.listing(groups, nouns)
        if word in DISTRACTOR_LEADS:
            return CaptionText(DISTRACTOR_LEADS[word] + body, [word] + nouns)
        return CaptionText(body + DISTRACTOR_TAILS[word], nouns + [word])

    def counted(self) -> CaptionText:
        nouns: list[str] = []
        multi = [g for g in self.groups if g.count > 1]
        if not multi:
            return self.related() if len(self.groups) > 1 else self.with_stuff()
        g = multi[int(self.rng.integers(len(multi)))]
        phrase = self.noun_phrase(g, nouns)
        others = [o for o in self.groups if o is not g]
        if others and self.rng.random() < 0.6:
            other = others[int(self.rng.integers(len(others)))]
            return CaptionText(f"{phrase} and {self.noun_phrase(other, nouns)}", nouns)
        stuff = self.stuff_of(g)
        if stuff is not None:
            return CaptionText(f"{phrase} {self.stuff_phrase(stuff, nouns)}", nouns)
        return CaptionText(f"there are {phrase} in this picture", nouns)

    def captions(self, n: int = 5) -> list[CaptionText]:
        """``n`` captions in different styles, in random order, no two identical."""
        styles = [self.inventory, self.related, self.with_stuff, self.with_distractor, self.counted, self.related]
        out: list[CaptionText] = []
        seen: set[str] = set()
        order = list(self.rng.permutation(len(styles)))
        tries = 0
        while len(out) < n and tries < 40:
            style = styles[order[tries % len(styles)]]
            tries += 1
            cap = style()
            text = self._finish(cap.text)
            if text.lower().rstrip(".") in seen and tries < 30:
                continue
            seen.add(text.lower().rstrip("."))
            out.append(CaptionText(text, cap.nouns))
        return out

    def _finish(self, text: str) -> str:
        text = " ".join(text.split())
        if self.rng.random() < 0.5:
            text = text[:1].upper() + text[1:]
        if self.rng.random() < 0.7:
            text += "."
        return text


def write_captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[CaptionText]:
    """The captions of one scene (deterministic given the generator's state)."""
    return Grammar(scene, rng).captions(n)


__all__ = ["CaptionText", "Grammar", "write_captions", "STUFF"]
