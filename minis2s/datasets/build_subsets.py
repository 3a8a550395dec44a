"""How the bundled corpora were made (run from the repository root with the shared data beside it):

    python -m minis2s.datasets.build_subsets ../shared/data

eng-fra.tsv.gz   every pair of the Tatoeba English-French file whose two sides have at most 10
                 word tokens each (minis2s' word tokenizer), in the original order, lines unchanged.
cmn-eng.tsv.gz   every pair of the Tatoeba English-Chinese file whose English side has at most 10
                 word tokens and whose Chinese side at most 16 characters, lines unchanged, with
                 its per-pair attribution lines in cmn-eng.attribution.txt.gz (line i <-> pair i).
"""
import gzip
import os
import shutil
import sys

from ..data import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def _write(name, lines):
    with gzip.GzipFile(os.path.join(HERE, name), "wb", compresslevel=9, mtime=0) as stream:
        stream.write("".join(line + "\n" for line in lines).encode("utf-8"))


def main(shared):
    words, chars = Tokenizer("word"), Tokenizer("char")
    with gzip.open(os.path.join(shared, "eng-fra.tsv.gz"), "rt", encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    kept = [line for line in lines
            if all(len(words.tokenize(side)) <= 10 for side in line.split("\t")[:2])]
    _write("eng-fra.tsv.gz", kept)
    with open(os.path.join(shared, "cmn-eng.tsv"), encoding="utf-8") as stream:
        pairs = stream.read().splitlines()
    with gzip.open(os.path.join(shared, "cmn-eng.attribution.txt.gz"), "rt", encoding="utf-8") as stream:
        credits = stream.read().splitlines()
    chosen = [i for i, line in enumerate(pairs)
              if len(words.tokenize(line.split("\t")[0])) <= 10 and len(chars.tokenize(line.split("\t")[1])) <= 16]
    _write("cmn-eng.tsv.gz", [pairs[i] for i in chosen])
    _write("cmn-eng.attribution.txt.gz", [credits[i] for i in chosen])
    shutil.copy(os.path.join(shared, "eng-fra.about.txt"), HERE)
    print(f"eng-fra: {len(kept)} of {len(lines)} pairs; cmn-eng: {len(chosen)} of {len(pairs)} pairs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
