"""One linear model per watchlist, trained on its readers' ratings, and all of them scored at once.

No I/O: the pipeline hands in the rated papers and a sample of unrated ones, and keeps the
bytes a model serialises to.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from digest.models import Paper
from digest.ranking.features import N_FEATURES, featurize

# scipy is imported where it is used: a run with no ratings never loads it.
if TYPE_CHECKING:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

MAGIC = b"PDRM"  # paper-digest ranking model
FORMAT = 3  # bumped when the bytes change meaning; an older model is then retrained
MIN_LIKES = 3  # the least that leaves two likes to learn from when one is held out
MIN_BACKGROUND = 20  # with likes alone, this many unrated papers stand in for dislikes
MAX_BACKGROUND = 400  # beyond a few hundred, more unrated papers cost time and teach little
BACKGROUND_WEIGHT = 0.25  # an unrated paper is a weak negative: it may be wanted, unseen
REGULARISATION = 4.0  # inverse strength (C); larger lets rare, telling words count more
CALIBRATION_FOLDS = 3  # held-out passes that say how far the model can be trusted
# How far a model counts against a paper (see WatchlistModel.say). Not resembling the liked
# papers is weak evidence, the weaker the fewer they are: a lean against counts UNLIKE_SHARE
# x likes / (likes + UNLIKE_EVIDENCE), so less than 0.15 x feedback_weight (0.75 points by
# default) is taken, less than a title hit is worth. Being nearer to a disliked paper than
# to any liked one is evidence of its own: it costs at least NEAR_DISLIKED x feedback_weight.
UNLIKE_SHARE = 0.15
UNLIKE_EVIDENCE = 10
NEAR_DISLIKED = 0.5
# Alone, with nothing else for a paper, a model must lean "liked" at least this far
# (P(liked) >= 0.75), and further where its held-out papers that leaned as far were not
# liked more often than not (see _alone).
ALONE_FLOOR = 0.5
MAX_COEFFICIENTS = 4096  # the largest weights kept, so a model stays under 100 KB
PROFILE_TERMS = 32  # each rated paper kept as its most telling terms, to say "close to"
MAX_RATED = 1000  # rated papers kept to say "close to", likes first
TITLE_CHARS = 300


class ModelError(ValueError):
    """Bytes that are not a model of this format."""


@dataclass(frozen=True, slots=True)
class RatedPaper:
    """A rated paper a model remembers, so a reason can name it."""

    key: str
    title: str
    value: int  # +1 liked or saved, -1 disliked


@dataclass(frozen=True, slots=True)
class Closest:
    """The rated paper nearest to a scored one, and how near (over rarity-weighted terms)."""

    paper: RatedPaper
    similarity: float


class Corpus:
    """Papers turned into feature rows once, shared by every watchlist trained in one run."""

    def __init__(self, papers: Iterable[Paper]) -> None:
        unique = list({p.key: p for p in papers}.values())
        self.papers = {p.key: p for p in unique}
        self._row = {p.key: i for i, p in enumerate(unique)}
        self.rows = featurize(unique)

    def __contains__(self, key: object) -> bool:
        return key in self._row

    def rows_of(self, keys: Sequence[str]) -> sparse.csr_matrix:
        return self.rows[[self._row[k] for k in keys]]


class WatchlistModel:
    """A watchlist's learned taste: sparse weights over the shared features, and its rated papers.

    ``lean`` is in (-1, 1): above 0 the model leans "liked", below it "not for this list".
    The rated papers and their profiles are only needed to name a reason, so a model read
    back from bytes decodes them on first use.
    """

    def __init__(self, *, index: np.ndarray, weights: np.ndarray, intercept: float,
                 rated: Sequence[RatedPaper] | None = None,
                 profiles: sparse.csr_matrix | None = None,
                 trained_on: tuple[int, int, int], alone: float = ALONE_FLOOR,
                 memory: bytes | None = None) -> None:
        self.index = index.astype(np.int32)
        self.weights = weights.astype(np.float32)
        self.intercept = float(intercept)
        self._rated = tuple(rated) if rated is not None else None
        self._profiles = profiles
        self._memory = memory  # compressed rated papers and profiles, not decoded yet
        self.trained_on = trained_on  # likes, dislikes, unrated papers used as negatives
        # The least lean from which the model, alone, is right more often than not on the
        # papers it did not see while learning; 1.0 where it never was: see _alone.
        self.alone = float(alone)

    @property
    def likes(self) -> int:
        return self.trained_on[0]

    @property
    def rated(self) -> tuple[RatedPaper, ...]:
        self._rated, self._profiles = self._remembered()
        return self._rated

    @property
    def profiles(self) -> sparse.csr_matrix:
        self._rated, self._profiles = self._remembered()
        return self._profiles

    @property
    def unlike_share(self) -> float:
        """The share of a lean against that counts for a paper merely unlike the likes."""
        return UNLIKE_SHARE * self.likes / (self.likes + UNLIKE_EVIDENCE)

    def lean(self, rows: sparse.csr_matrix) -> np.ndarray:
        return ModelSet({"_": self}).lean(rows)[:, 0]

    def say(self, lean: float, closest: Closest | None) -> float:
        """What the model says of a paper, in [-1, 1], from its lean and nearest rated paper.

        Nearer to a disliked paper than to any liked one: against it, by at least
        NEAR_DISLIKED, whatever the words it shares with the liked papers make it lean.
        Otherwise the lean; against a paper, only the small share that "unlike the liked
        papers" is worth.
        """
        if closest is not None and closest.paper.value < 0:
            return -max(-lean, NEAR_DISLIKED)
        return lean if lean > 0 else lean * self.unlike_share

    def nearest(self, rows: sparse.csr_matrix, liked: np.ndarray) -> list[Closest | None]:
        """For each row, a disliked paper if it is the nearer side (see below); otherwise
        the nearest liked paper where ``liked`` is True, and None where not.

        A paper is on the disliked side when a disliked paper is nearer to it than any liked
        one, and also over the terms that tell the two apart: those of the disliked papers
        that no liked paper has, against those of the liked papers that no disliked paper
        has. A LoRa radio paper a reader disliked shares "LoRa" with every LoRA paper they
        liked; that word alone says nothing of which side a new paper is on, its radio words
        do. The disliked paper named is the nearest one, the one its reader will know.
        """
        # Decoded for this call only: a run that names reasons for 1,000 models would
        # otherwise hold every model's rated papers at once.
        rated, profiles = self._remembered()
        if not rated or rows.shape[0] == 0:
            return [None] * rows.shape[0]
        signs = np.array([p.value for p in rated])
        similarity = np.maximum(rows.dot(profiles.T).toarray(), 0.0)
        near_liked = np.where(signs > 0, similarity, -1.0)
        best_liked, nearest_liked = near_liked.argmax(1), near_liked.max(1)
        disliked = np.zeros(rows.shape[0], dtype=bool)
        if (signs < 0).any():
            near_disliked = np.where(signs < 0, similarity, -1.0)
            best_disliked = near_disliked.argmax(1)
            nearer = np.flatnonzero(near_disliked.max(1) > np.maximum(nearest_liked, 0.0))
            if len(nearer):  # few rows are: only they need the terms that tell sides apart
                apart = np.maximum(rows[nearer].dot(_apart(profiles, signs).T).toarray(), 0.0)
                disliked[nearer] = (np.where(signs < 0, apart, -1.0).max(1)
                                    > np.where(signs > 0, apart, 0.0).max(1))
        out: list[Closest | None] = []
        for i, side in enumerate(liked.tolist()):
            if disliked[i]:
                j = int(best_disliked[i])
                out.append(Closest(rated[j], round(float(similarity[i, j]), 4)))
            elif side and nearest_liked[i] >= 0:
                j = int(best_liked[i])
                out.append(Closest(rated[j], round(float(nearest_liked[i]), 4)))
            else:
                out.append(None)
        return out

    # ------------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """MAGIC, format, the two parts' lengths, then the parts: the weights, all a run
        needs to score, as they are (every run reads them all, and they compress little),
        then the rated papers, compressed, read only to name a reason."""
        core = _pack({"intercept": self.intercept, "trained_on": list(self.trained_on),
                      "alone": self.alone},
                     (self.index.astype("<i4"), self.weights.astype("<f4")))
        memory = self._memory
        if memory is None:
            profiles = self.profiles
            memory = zlib.compress(_pack(
                {"rated": [[p.key, p.title, p.value] for p in self.rated]},
                (profiles.indptr.astype("<i4"), profiles.indices.astype("<i4"),
                 profiles.data.astype("<f2"))), 1)
        return (MAGIC + struct.pack("<HII", FORMAT, len(core), len(memory)) + core + memory)

    @classmethod
    def from_bytes(cls, blob: bytes) -> WatchlistModel:
        if blob[:len(MAGIC)] != MAGIC or len(blob) < len(MAGIC) + 2:
            raise ModelError("not a ranking model")
        (version,) = struct.unpack_from("<H", blob, len(MAGIC))
        if version != FORMAT:
            raise ModelError(f"model format {version}, expected {FORMAT}")
        try:
            start = len(MAGIC) + struct.calcsize("<HII")
            _, core_size, memory_size = struct.unpack_from("<HII", blob, len(MAGIC))
            if len(blob) != start + core_size + memory_size:
                raise ValueError(f"{len(blob)} bytes, expected {start + core_size + memory_size}")
            header, (index, weights) = _unpack(blob[start:start + core_size], ("<i4", "<f4"))
            likes, dislikes, unrated = header["trained_on"]
            return cls(index=index, weights=weights, intercept=float(header["intercept"]),
                       trained_on=(int(likes), int(dislikes), int(unrated)),
                       alone=float(header["alone"]), memory=blob[start + core_size:])
        except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
            raise ModelError(f"not a ranking model: {exc}") from exc

    def _remembered(self) -> tuple[tuple[RatedPaper, ...], sparse.csr_matrix]:
        """The rated papers and their profiles, decoded from the bytes if need be."""
        from scipy import sparse

        if self._rated is not None and self._profiles is not None:
            return self._rated, self._profiles
        try:
            header, (indptr, indices, data) = _unpack(zlib.decompress(self._memory or b""),
                                                      ("<i4", "<i4", "<f2"))
            rated = tuple(RatedPaper(str(k), str(t), int(v)) for k, t, v in header["rated"])
            profiles = sparse.csr_matrix((data.astype(np.float32), indices, indptr),
                                         shape=(len(rated), N_FEATURES))
        except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
            # The weights were read; only the reasons lose the paper they would name.
            log.warning("ranking model: rated papers unreadable, reasons will name none: %s",
                        exc)
            rated, profiles = (), sparse.csr_matrix((0, N_FEATURES), dtype=np.float32)
            self._rated, self._profiles = rated, profiles  # say so once
        return rated, profiles


def _pack(header: dict[str, object], arrays: Sequence[np.ndarray]) -> bytes:
    text = json.dumps({**header, "sizes": [len(a) for a in arrays]}).encode()
    return struct.pack("<I", len(text)) + text + b"".join(a.tobytes() for a in arrays)


def _unpack(body: bytes, dtypes: Sequence[str]) -> tuple[dict, list[np.ndarray]]:
    (length,) = struct.unpack_from("<I", body)
    header = json.loads(body[4:4 + length])
    arrays, offset = [], 4 + length
    for size, dtype in zip(header["sizes"], dtypes, strict=True):
        arrays.append(np.frombuffer(body, dtype=dtype, count=size, offset=offset))
        offset += size * np.dtype(dtype).itemsize
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes left over")
    return header, arrays


def train(corpus: Corpus, ratings: Mapping[str, int],
          background: Iterable[str] = ()) -> WatchlistModel | None:
    """Fit a watchlist's model, or None while its ratings are too few to learn from.

    ``ratings`` maps paper keys to +1 (liked) or -1 (disliked); keys missing from the
    corpus are skipped. ``background`` names unrated papers that count as weak negatives;
    the first ``MAX_BACKGROUND`` of them are used.
    """
    from scipy import sparse

    rated = {k: v for k, v in ratings.items() if k in corpus}
    liked = [k for k, v in rated.items() if v > 0]
    disliked = [k for k, v in rated.items() if v < 0]
    unrated = [k for k in dict.fromkeys(background) if k in corpus and k not in rated]
    unrated = unrated[:MAX_BACKGROUND]
    if len(liked) < MIN_LIKES or (not disliked and len(unrated) < MIN_BACKGROUND):
        return None
    keys = liked + disliked + unrated
    rows = corpus.rows_of(keys)
    labels = np.array([1] * len(liked) + [0] * (len(disliked) + len(unrated)))
    # Likes and negatives weigh the same in total, so a model with 5 likes and 400 unrated
    # papers does not learn "never"; an explicit dislike weighs more than an unrated paper.
    negative = np.array([1.0] * len(disliked) + [BACKGROUND_WEIGHT] * len(unrated))
    positive = np.full(len(liked), negative.sum() / len(liked))
    weight = np.concatenate([positive, negative])
    weight *= len(keys) / weight.sum()
    present = np.bincount(rows.indices, minlength=N_FEATURES)
    columns = np.flatnonzero(present)
    rarity = _idf(present[columns], rows.shape[0])
    # The design keeps only the columns these papers use, each scaled by its rarity: the
    # indices are renumbered in place of slicing columns, which costs more than the fit.
    renumber = np.zeros(N_FEATURES, dtype=np.int32)
    renumber[columns] = np.arange(len(columns), dtype=np.int32)
    local = renumber[rows.indices]
    design = sparse.csr_matrix((rows.data * rarity[local], local, rows.indptr),
                               shape=(rows.shape[0], len(columns)))
    coefficients, bias, slope, offset, held_out = _cross_fit(design, labels, weight)
    # A row is scored as x . (w * idf): the corpus's word rarity is folded into the weights,
    # and so is the calibration, so that a model stays one sparse column and one number.
    effective = coefficients * rarity * slope
    intercept = bias * slope + offset
    keep = np.flatnonzero(effective)
    if len(keep) > MAX_COEFFICIENTS:
        keep = keep[np.argpartition(-np.abs(effective[keep]), MAX_COEFFICIENTS)
                    [:MAX_COEFFICIENTS]]
    order = np.argsort(columns[keep])
    index, weights = columns[keep][order], effective[keep][order]
    kept = (liked + disliked)[:MAX_RATED]
    profiles = _profiles(rows[:len(kept)], rarity[local[:rows.indptr[len(kept)]]])
    remembered = [RatedPaper(k, corpus.papers[k].title[:TITLE_CHARS], rated[k]) for k in kept]
    return WatchlistModel(index=index, weights=weights,
                          intercept=intercept, rated=remembered,
                          profiles=profiles, trained_on=(len(liked), len(disliked), len(unrated)),
                          alone=_alone(np.tanh((held_out * slope + offset) / 2), labels))


def _idf(present: np.ndarray, count: int) -> np.ndarray:
    """Smoothed inverse document frequency of terms found in ``present`` of ``count`` rows."""
    return (np.log((1 + count) / (1 + present)) + 1.0).astype(np.float32)


def _fit(design: sparse.csr_matrix, labels: np.ndarray,
         weight: np.ndarray) -> LogisticRegression:
    # scikit-learn is imported by the runs that train, not by every run (about 0.6 s).
    import sklearn
    from sklearn.linear_model import LogisticRegression

    # A fixed seed for the solver's order of visits: the same ratings give the same model.
    classifier = LogisticRegression(C=REGULARISATION, solver="liblinear", dual=True,
                                    random_state=0)
    # The design is built here, finite and well-formed: checking it again on each of the
    # thousands of fits of a run costs as much as a fit.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        classifier.fit(design, labels, sample_weight=weight)
    return classifier


def _cross_fit(design: sparse.csr_matrix, labels: np.ndarray, weight: np.ndarray
               ) -> tuple[np.ndarray, float, float, float, np.ndarray]:
    """Coefficients, bias, the slope and offset that calibrate them (Platt), and each
    paper's score by the classifier that did not see it, in one pass.

    Each fold's classifier scores the papers it did not see; the model is the average of
    the folds' classifiers, so no further fit on all papers is needed. A model fitted on a
    handful of likes is sure of the papers it saw and much less of a new paper on the same
    topic; the held-out scores show how sure it should be. A model that tells nothing
    apart gets a slope near 0 and says nothing.
    """
    likes, others = int(labels.sum()), int(len(labels) - labels.sum())
    folds = min(CALIBRATION_FOLDS, likes, others)
    if folds < 2:  # one negative: nothing can be held out and still leave both kinds
        classifier = _fit(design, labels, weight)
        return (classifier.coef_.ravel(), float(classifier.intercept_[0]), 0.0, 0.0,
                np.zeros(len(labels)))
    fold = np.empty(len(labels), dtype=np.int64)
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        fold[members] = np.arange(len(members)) % folds
    held_out = np.zeros(len(labels))
    coefficients = np.zeros(design.shape[1])
    bias = 0.0
    for k in range(folds):
        seen = fold != k
        classifier = _fit(design[seen], labels[seen], weight[seen])
        held_out[~seen] = classifier.decision_function(design[~seen])
        coefficients += classifier.coef_.ravel() / folds
        bias += float(classifier.intercept_[0]) / folds
    # Platt's smoothed targets: with 4 likes a liked paper counts as 5/6 liked, not as
    # certain, so a few likes never make the model sure of anything.
    target = np.where(labels == 1, (likes + 1) / (likes + 2), 1 / (others + 2))
    slope, offset = _platt(held_out, target, weight)
    return coefficients, bias, max(slope, 0.0), offset, held_out


def _alone(leans: np.ndarray, labels: np.ndarray) -> float:
    """The least lean, from ALONE_FLOOR up, at which the held-out papers leaning at least as
    far were liked at least as often as not; 1.0 (never) where no such lean exists.

    Calibration says how sure the model is on average; this says whether its surest
    papers are the liked ones. A watchlist whose likes share authors and not a topic (an
    author watch) leans far towards unrated papers on the topics of one or two likes,
    and is told here not to send any paper on that alone. Unrated papers count as not
    liked, although a few were wanted: the estimate errs on the side of sending less.
    """
    order = np.argsort(-leans, kind="stable")
    ranked, liked = leans[order], labels[order] == 1
    # At the k-th surest paper: likes among the k surest, against the others.
    ahead = np.cumsum(liked) >= np.cumsum(~liked)
    # A lean is a threshold only where the next paper leans less: ties go together.
    last = np.append(ranked[1:] < ranked[:-1], True)
    above = ranked >= ALONE_FLOOR
    usable = np.flatnonzero(ahead & last & above)
    if not len(usable):
        return 1.0
    # All held-out papers from the floor up together: the floor itself will do.
    return ALONE_FLOOR if usable[-1] == np.flatnonzero(above)[-1] else float(ranked[usable[-1]])


def _platt(scores: np.ndarray, target: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Slope and offset of the weighted logistic fit of ``target`` on ``scores`` (Newton)."""
    design = np.column_stack([scores, np.ones(len(scores))])
    params = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(design @ params)))
        gradient = design.T @ (weight * (p - target)) + 1e-6 * params
        hessian = (design.T * (weight * p * (1 - p))) @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(params[0]), float(params[1])


def _apart(profiles: sparse.csr_matrix, signs: np.ndarray) -> sparse.csr_matrix:
    """The profiles without the terms that both a liked and a disliked profile hold."""
    from scipy import sparse

    side = np.repeat(signs, np.diff(profiles.indptr))
    held: dict[int, np.ndarray] = {}
    for value in (1, -1):
        held[value] = np.zeros(profiles.shape[1], dtype=bool)
        held[value][profiles.indices[side == value]] = True
    shared = held[1][profiles.indices] & held[-1][profiles.indices]
    return sparse.csr_matrix((np.where(shared, 0.0, profiles.data).astype(np.float32),
                              profiles.indices, profiles.indptr), shape=profiles.shape)


def _profiles(rows: sparse.csr_matrix, rarity: np.ndarray) -> sparse.csr_matrix:
    """Rated papers as their most telling terms, shaped so that ``profile . x`` ranks by cosine.

    ``rarity`` is the weight of each stored value of ``rows``. The cosine of rarity-weighted
    vectors is (x*idf).(r*idf) / (|x*idf| |r*idf|); for one scored paper |x*idf| is the same
    for every rated paper, so storing r*idf^2/|r*idf| ranks the rated papers without knowing
    the rarity of words the model never saw.
    """
    from scipy import sparse

    count = rows.shape[0]
    if count == 0:
        return sparse.csr_matrix((0, N_FEATURES), dtype=np.float32)
    values = rows.data * rarity
    row = np.repeat(np.arange(count), np.diff(rows.indptr))
    norms = np.sqrt(np.bincount(row, weights=values * values, minlength=count))
    norms[norms == 0] = 1.0
    # The PROFILE_TERMS largest values of each row, then back in column order; one sort
    # key per value (its row, then largest first within [row, row + 1)) sorts all at once.
    key = row + 0.5 * (1.0 - values / max(float(values.max()), 1e-30))
    order = np.argsort(key, kind="stable")
    rank = np.arange(len(order)) - rows.indptr[row[order]]
    top = order[rank < PROFILE_TERMS]
    top = top[np.argsort(row[top].astype(np.int64) * N_FEATURES + rows.indices[top])]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row[top], minlength=count))])
    data = values[top] * rarity[top] / norms[row[top]]
    return sparse.csr_matrix((data.astype(np.float32), rows.indices[top], indptr),
                             shape=(count, N_FEATURES))


class ModelSet:
    """Every model of a run stacked into one sparse matrix: all papers x all models at once."""

    def __init__(self, models: Mapping[str, WatchlistModel]) -> None:
        self.names = list(models)
        self.models = dict(models)
        self.column = {name: i for i, name in enumerate(self.names)}
        self.intercepts = np.array([m.intercept for m in models.values()], dtype=np.float32)
        self.weights: sparse.csr_matrix | None = None  # none to stack in a run without models
        if not models:
            return
        from scipy import sparse

        sizes = [len(m.index) for m in models.values()]
        self.weights = sparse.csc_matrix(
            (np.concatenate([m.weights for m in models.values()]),
             (np.concatenate([m.index for m in models.values()]),
              np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))),
            shape=(N_FEATURES, len(sizes)), dtype=np.float32).tocsr()

    def __bool__(self) -> bool:
        return bool(self.names)

    def lean(self, rows: sparse.csr_matrix) -> np.ndarray:
        """(papers x models) in (-1, 1): 2 x P(liked) - 1 for each paper and model.

        What it makes of a paper also depends on the paper's nearest rated papers: see
        ``closest`` and ``WatchlistModel.say``.
        """
        if self.weights is None or rows.shape[0] == 0:
            return np.zeros((rows.shape[0], len(self.names)), dtype=np.float32)
        logits = rows.dot(self.weights).toarray() + self.intercepts
        return np.tanh(logits / 2).astype(np.float32)

    def closest(self, rows: sparse.csr_matrix, leans: np.ndarray,
                wanted: Mapping[str, Sequence[int]]) -> dict[tuple[int, str], Closest]:
        """For each model, the rated paper nearest to each of its ``wanted`` rows.

        A disliked paper where one is nearer than any liked paper, else the nearest liked
        paper where the model leans "liked". One sparse product per model, not per pair.
        """
        out: dict[tuple[int, str], Closest] = {}
        for name, chosen in wanted.items():
            model = self.models.get(name)
            if model is None or not len(chosen):
                continue
            picked = np.asarray(chosen, dtype=np.int64)
            for (row, closest) in zip(picked, model.nearest(rows[picked],
                                                            leans[picked, self.column[name]] > 0),
                                      strict=True):
                if closest is not None:
                    out[(int(row), name)] = closest
        return out
