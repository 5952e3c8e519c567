"""Writes the test corpus: English-like sentences from a fixed grammar and word lists (no outside text).

    python tests/data/make_corpus.py        # rewrites corpus-train.txt.xz and corpus-val.txt.xz

The text is a pure function of the seed (Python's ``random.Random``), so the files can be checked
against this script (tests/test_data.py does). The words and templates below were written for
archdsl; the generated files carry the project's licence (Apache-2.0).
"""

from __future__ import annotations

import lzma
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FILES = {"corpus-train.txt.xz": (1, 1_200_000), "corpus-val.txt.xz": (2, 300_000)}  # name: (seed, bytes)

NOUNS = words(
    "river stone garden window kettle lantern harbour meadow engine letter bridge valley orchard "
    "mountain village teacher farmer sailor painter doctor baker student child captain miller "
    "forest candle mirror ladder basket carpet fiddle shadow morning evening winter summer "
    "road field cloud storm market castle tower island wagon horse sparrow fox owl rabbit"
)
ADJECTIVES = words(
    "old quiet bright narrow heavy gentle cold warm green golden broken distant tired patient "
    "careful small large silver crooked hidden empty busy early late little clever honest"
)
VERBS = words(
    "watched carried found opened followed painted mended crossed remembered visited counted "
    "lifted noticed pushed closed cleaned built wanted measured borrowed described"
)
INTRANSITIVE = words("slept waited laughed wandered rested sang vanished listened returned hurried")
ADVERBS = words("slowly quietly suddenly carefully again later early gladly often rarely")
PREPOSITIONS = words("near under behind beside across over past toward along through")
DETERMINERS = ("the", "the", "the", "a", "every", "one", "that", "this", "her", "his", "their")
NAMES = words("Anna Tomas Mira Oskar Lena Pavel Ines Hugo Clara Felix Rosa Emil")
CONNECTIVES = ("and then", "but", "because", "while", "so", "although", "before", "after")


def noun_phrase(r: random.Random) -> str:
    if r.random() < 0.15:
        return r.choice(NAMES)
    words = [r.choice(DETERMINERS)]
    if r.random() < 0.5:
        words.append(r.choice(ADJECTIVES))
    words.append(r.choice(NOUNS))
    if r.random() < 0.2:
        words += [r.choice(PREPOSITIONS), r.choice(DETERMINERS), r.choice(NOUNS)]
    return " ".join(words)


def clause(r: random.Random) -> str:
    subject = noun_phrase(r)
    if r.random() < 0.3:
        verb = r.choice(INTRANSITIVE)
        tail = f" {r.choice(PREPOSITIONS)} {noun_phrase(r)}" if r.random() < 0.6 else ""
        text = f"{subject} {verb}{tail}"
    else:
        text = f"{subject} {r.choice(VERBS)} {noun_phrase(r)}"
    if r.random() < 0.3:
        text += f" {r.choice(ADVERBS)}"
    return text


def sentence(r: random.Random) -> str:
    text = clause(r)
    if r.random() < 0.35:
        text += f" {r.choice(CONNECTIVES)} {clause(r)}"
    if r.random() < 0.1:
        return f'"{text[0].upper()}{text[1:]}?" asked {r.choice(NAMES)}.'
    return f"{text[0].upper()}{text[1:]}."


def text(seed: int, size: int) -> bytes:
    """About ``size`` bytes of paragraphs (ends at the first paragraph break at or past ``size``)."""
    r, out, n = random.Random(seed), [], 0
    while n < size:
        para = " ".join(sentence(r) for _ in range(r.randint(3, 8))) + "\n\n"
        out.append(para)
        n += len(para)
    return "".join(out).encode("ascii")


def main() -> None:
    for name, (seed, size) in FILES.items():
        (HERE / name).write_bytes(lzma.compress(text(seed, size), preset=9 | lzma.PRESET_EXTREME))


if __name__ == "__main__":
    main()
