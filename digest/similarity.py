"""'More like these papers': TF-IDF over the store's papers, explained by shared terms.

No I/O: the pipeline hands in the texts (the store's papers, and the seeds) it read.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

_WORD = re.compile(r"[a-z][a-z0-9]+")
# Words too common in abstracts to say anything about a topic.
STOPWORDS = frozenset("""
a about above across after again against all also although among an and any are as at be
because been before being below between both but by can could did do does doing done down
during each either et few for from further had has have having here how however i if in
into is it its itself just less many may might more most much must new no nor not novel
of off on once one only or other our out over own paper per present propose proposed
provide same several should show shows since so some such than that the their them then
there these they this those three through thus to too two under until up upon use used
using via was we well were what when where whether which while who whom why will with
within without would yet approach method methods results result based work study task
tasks model models data performance show shown achieve achieves first finally further
""".split())


def tokens(text: str) -> list[str]:
    """Lower-case words of 3+ letters, stop words out, a plural 's' folded."""
    out = []
    for word in _WORD.findall(text.casefold()):
        if len(word) < 3 or word in STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


Vector = dict[str, float]


class SimilarityIndex:
    """Document frequencies of a corpus, to weigh terms by how distinctive they are."""

    def __init__(self, documents: Iterable[str] = ()) -> None:
        self.df: Counter[str] = Counter()
        self.size = 0
        for document in documents:
            self.df.update(set(tokens(document)))
            self.size += 1

    @classmethod
    def from_counts(cls, df: Mapping[str, int], size: int) -> SimilarityIndex:
        """An index of a corpus counted elsewhere (the store keeps its counts)."""
        index = cls()
        index.df.update(df)
        index.size = size
        return index

    def idf(self, term: str) -> float:
        return math.log((self.size + 1) / (self.df.get(term, 0) + 1)) + 1.0

    def vector(self, text: str) -> Vector:
        counts = Counter(tokens(text))
        weights = {t: (1 + math.log(c)) * self.idf(t) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    def profile(self, seeds: Iterable[str]) -> Vector:
        """The normalised centroid of the seed texts."""
        total: dict[str, float] = {}
        for seed in seeds:
            for term, weight in self.vector(seed).items():
                total[term] = total.get(term, 0.0) + weight
        norm = math.sqrt(sum(w * w for w in total.values())) or 1.0
        return {t: w / norm for t, w in total.items()}


def compare(profile: Vector, vector: Vector, *, explain: int = 5) -> tuple[float, tuple[str, ...]]:
    """Cosine similarity, and the shared terms that contribute most to it."""
    if len(vector) > len(profile):
        profile, vector = vector, profile
    shared = [(weight * profile[term], term) for term, weight in vector.items()
              if term in profile]
    shared.sort(key=lambda pair: (-pair[0], pair[1]))
    return sum(p for p, _ in shared), tuple(term for _, term in shared[:explain])
