"""'More like these papers': TF-IDF over the store's papers, explained by shared terms.

No I/O: the pipeline hands in the texts (the store's papers, and the seeds) it read.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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
        return centroid(self.vector(seed) for seed in seeds)


def centroid(vectors: Iterable[Vector]) -> Vector:
    """The normalised sum of these vectors."""
    total: dict[str, float] = {}
    for vector in vectors:
        for term, weight in vector.items():
            total[term] = total.get(term, 0.0) + weight
    norm = math.sqrt(sum(w * w for w in total.values())) or 1.0
    return {t: w / norm for t, w in total.items()}


EXPLAIN_TERMS = 5  # the shared terms a reason names


def compare(profile: Vector, vector: Vector, *,
            explain: int = EXPLAIN_TERMS) -> tuple[float, tuple[str, ...]]:
    """Cosine similarity, and the shared terms that contribute most to it (most first, then
    in alphabetical order). ``Profiles.alike`` gives the same for many profiles at once."""
    if len(vector) > len(profile):
        profile, vector = vector, profile
    shared = [(weight * profile[term], term) for term, weight in vector.items()
              if term in profile]
    shared.sort(key=lambda pair: (-pair[0], pair[1]))
    return sum(p for p, _ in shared), tuple(term for _, term in shared[:explain])


class Profiles:
    """Several watchlists' profiles as one sparse matrix: how alike a paper is to each, for
    all at once, rather than a comparison per watchlist.

    A paper is alike to a profile when its cosine reaches the profile's floor; for those,
    ``alike`` gives what ``compare`` gives, to the last bit: the same products, summed in
    the same order. Profiles are added one by one and kept as arrays only, so that a
    thousand profiles of thousands of terms never stand as dictionaries at once.
    """

    # a cosine from the product may differ from compare's sum in its last bits: the product
    # picks the profiles to compare with a margin that covers that
    SLACK = 1e-9

    def __init__(self) -> None:
        self.names: list[str] = []
        self.columns: dict[str, int] = {}  # a term's row in the matrix
        self._terms: list[str] = []  # the terms by row
        self._parts: list[tuple[Any, Any]] = []  # each profile's rows and weights
        self._floors: list[float] = []
        self._built: tuple[Any, Any, Any] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, profile: Vector, floor: float) -> None:
        """One more profile, alike to a paper from ``floor`` up."""
        import numpy as np

        rows = np.fromiter((self.columns.setdefault(t, len(self.columns)) for t in profile),
                           dtype=np.int32, count=len(profile))
        self._parts.append((rows, np.fromiter(profile.values(), dtype=np.float64,
                                              count=len(profile))))
        self.names.append(name)
        self._floors.append(floor)
        self._built = None

    def _matrix(self) -> tuple[Any, Any, Any]:
        """Terms x profiles, each term's rank in alphabetical order, and the floors."""
        if self._built is None:
            import numpy as np
            from scipy import sparse

            owners = np.repeat(np.arange(len(self._parts), dtype=np.int32),
                               [len(rows) for rows, _ in self._parts])
            rows = np.concatenate([rows for rows, _ in self._parts] or [np.zeros(0, np.int32)])
            weights = np.concatenate([w for _, w in self._parts] or [np.zeros(0)])
            matrix = sparse.csr_matrix((weights, (rows, owners)),
                                       shape=(len(self.columns), len(self.names)))
            self._terms = list(self.columns)
            alphabetical = np.argsort(np.argsort(np.array(self._terms, dtype=object)))
            self._built = (matrix, alphabetical, np.array(self._floors) - self.SLACK)
        return self._built

    def alike(self, vector: Vector, keep: Callable[[str, float], bool] | None = None
              ) -> dict[str, tuple[float, tuple[str, ...]]]:
        """For each profile the paper (its ``vector``) is alike to, and that ``keep`` keeps
        given the cosine (to within SLACK): the cosine and the shared terms that contribute
        most, as ``compare`` gives them."""
        import numpy as np

        matrix, alphabetical, floors = self._matrix()
        found = [(self.columns[t], w) for t, w in vector.items() if t in self.columns]
        if not found:  # a floor of 0 is reached without a shared term
            return {self.names[j]: (0, ()) for j in np.flatnonzero(floors <= 0)
                    if keep is None or keep(self.names[j], 0.0)}
        rows = np.array([row for row, _ in found])
        # each shared term's product, profile by profile (columns of a CSC matrix)
        products = matrix[rows].multiply(np.array([w for _, w in found])[:, None]).tocsc()
        cosines = np.asarray(products.sum(axis=0)).ravel()
        out = {}
        for j in np.flatnonzero(cosines >= floors).tolist():
            if keep is not None and not keep(self.names[j], float(cosines[j])):
                continue
            start, end = products.indptr[j], products.indptr[j + 1]
            values, terms = products.data[start:end], rows[products.indices[start:end]]
            order = np.lexsort((alphabetical[terms], -values))
            out[self.names[j]] = (sum(values[order].tolist()),
                                  tuple(self._terms[t] for t in terms[order[:EXPLAIN_TERMS]]))
        return out
