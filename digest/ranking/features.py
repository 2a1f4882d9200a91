"""Papers as feature rows: hashed words and word pairs of title and abstract, authors, categories.

No I/O and no fitted state: the same paper always gives the same row, so models trained on
different days and for different watchlists share one feature space.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from digest.models import Paper, fold_text
from digest.similarity import STOPWORDS

# scipy is imported where it is used: a run with no ratings never loads it.
if TYPE_CHECKING:
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer

N_FEATURES = 2**18  # hashed, so nothing grows with the vocabulary; collisions are rare
TITLE_REPEAT = 2  # a word in the title says more than the same word in the abstract
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]*[a-z0-9]|[a-z]")
_NAME_PUNCT = re.compile(r"[^\w\s]|_")


def words(text: str) -> list[str]:
    """Lower-case words, stop words out, a plural 's' folded, hyphens kept inside a word."""
    out = []
    for word in _WORD.findall(fold_text(text)):
        if word in STOPWORDS or (len(word) < 2) or word.isdigit():
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


def tokens(paper: Paper) -> list[str]:
    """What a paper is made of for learning: words, adjacent word pairs, authors, categories."""
    out: list[str] = []
    for text, repeat in ((paper.title, TITLE_REPEAT), (paper.abstract, 1)):
        found = words(text)
        pairs = [f"{a} {b}" for a, b in zip(found, found[1:], strict=False)]
        out += (found + pairs) * repeat
    for author in paper.authors:
        name = " ".join(_NAME_PUNCT.sub(" ", fold_text(author)).split())
        if name:
            out.append(f"author:{name}")
    out += [f"category:{category}" for category in paper.categories]
    return out


@cache
def _hasher() -> HashingVectorizer:
    """scikit-learn's hasher, imported by the runs that learn, not by every run."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer=tokens, n_features=N_FEATURES, alternate_sign=False,
                             norm=None, dtype=np.float32)


def featurize(papers: Sequence[Paper]) -> sparse.csr_matrix:
    """One row per paper: sub-linear term counts, each row of unit length."""
    from scipy import sparse

    if not papers:
        return sparse.csr_matrix((0, N_FEATURES), dtype=np.float32)
    counts = _hasher().transform(papers).tocsr()
    counts.data = 1.0 + np.log(counts.data)
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms).dot(counts), dtype=np.float32)

