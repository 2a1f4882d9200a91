"""Which watchlists compare papers with their likes, said once for the run and for what a
reader is told after a rating (digest.feedback.next_step). No I/O."""

from __future__ import annotations

from digest.config import WatchlistSettings

# A watchlist of ratings alone compares each paper, word for word as similar_to does, with
# its liked papers: from the first like, before a model can be trained, and beside the
# model until it has learned from more than this many likes. Then the model alone: the
# comparison helped most with a few likes, and a run with many watchlists of hundreds of
# likes would compare most papers with most of them. A watchlist with rules of its own is
# left to its model: likeness to a few likes ranked its papers worse.
LIKED_SEEDS = 50


def compares_likes(watchlist: WatchlistSettings, likes: int) -> bool:
    """Whether a run compares each paper with this watchlist's ``likes`` liked papers."""
    return (watchlist.ratings_only and watchlist.feedback_weight > 0
            and watchlist.similarity_weight > 0 and 0 < likes <= LIKED_SEEDS)
