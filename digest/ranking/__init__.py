"""What learns from readers' ratings: paper features and one model per watchlist. No I/O."""

from digest.ranking.features import featurize
from digest.ranking.model import (
    MAX_BACKGROUND,
    MIN_LIKES,
    Closest,
    Corpus,
    ModelError,
    ModelSet,
    RatedPaper,
    WatchlistModel,
    train,
)

__all__ = ["MAX_BACKGROUND", "MIN_LIKES", "Closest", "Corpus", "ModelError", "ModelSet",
           "RatedPaper", "WatchlistModel", "featurize", "train"]
