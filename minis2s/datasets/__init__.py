"""Bundled corpora (Tatoeba sentence pairs, CC BY 2.0 FR) and generated toy tasks.

    bundled names   "eng-fra" (English -> French, <= 10 words a side, 140,558 pairs)
                    "cmn-eng" (English -> Chinese, short sentences), see README.md here for origin
                    and attribution; "fra-eng" and "eng-cmn" read the same files the other way round
    toy names       "copy", "reverse", "sort", "addition", "dates"

``load(name)`` returns (source text, target text) pairs; ``--data NAME`` on the command line
accepts these names as well as a path.
"""
import datetime
import os

import numpy

from ..data import read_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = {"eng-fra": ("eng-fra.tsv.gz", False), "fra-eng": ("eng-fra.tsv.gz", True),
           "eng-cmn": ("cmn-eng.tsv.gz", False), "cmn-eng": ("cmn-eng.tsv.gz", True)}
TOY = ("copy", "reverse", "sort", "addition", "dates")
ATTRIBUTION = "Sentence pairs from the Tatoeba Project (tatoeba.org), CC BY 2.0 FR, via manythings.org/anki."


def names():
    return list(BUNDLED) + [f"toy:{name}" for name in TOY]


def path(name):
    return os.path.join(HERE, BUNDLED[name][0])


def load(name, size=20_000, seed=0):
    """Pairs of text for a bundled corpus or a toy task ("toy:reverse" or "reverse")."""
    if name in BUNDLED:
        filename, swap = BUNDLED[name]
        pairs = read_pairs(os.path.join(HERE, filename))
        return [(t, s) for s, t in pairs] if swap else pairs
    task = name[4:] if name.startswith("toy:") else name
    if task in TOY:
        return toy(task, size, seed)
    raise KeyError(name)


def toy(task, size=20_000, seed=0):
    """Generated pairs: copy / reverse / sort a sequence of letters, add two numbers, normalise a date."""
    rng = numpy.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    pairs = []
    for _ in range(size):
        if task in ("copy", "reverse", "sort"):
            seq = list(rng.choice(letters[:12], size=rng.integers(3, 13)))
            out = seq if task == "copy" else seq[::-1] if task == "reverse" else sorted(seq)
            pairs.append((" ".join(seq), " ".join(out)))
        elif task == "addition":
            a, b = (int(x) for x in rng.integers(0, 1000, size=2))
            pairs.append((" ".join(f"{a}+{b}"), " ".join(str(a + b))))
        elif task == "dates":
            day = datetime.date(1950, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 36_500)))
            style = int(rng.integers(0, 4))
            text = [day.strftime("%d %B %Y"), day.strftime("%B %d, %Y"), day.strftime("%d/%m/%Y"),
                    day.strftime("%a %d %b %Y")][style]
            pairs.append((text.lower(), " ".join(day.isoformat())))
        else:
            raise KeyError(f"toy:{task}")
    return pairs
