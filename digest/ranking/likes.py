"""What a watchlist does with its likes, said once: for the run, and for the reader who
just gave one. No I/O."""

from __future__ import annotations

from digest.config import WatchlistSettings
from digest.ranking.model import MIN_LIKES

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


def next_step(watchlist: WatchlistSettings, action: str, likes: int) -> str:
    """What the next digests of this watchlist make of a rating just given (``action``:
    like, save or dislike), now that it has ``likes`` likes."""
    name = watchlist.name
    if action == "dislike":
        return f"This paper will not be sent to {name} again."
    if watchlist.feedback_weight <= 0:
        return f"{name} does not learn from ratings (its feedback_weight is 0)."
    liked = f"{likes} paper{'' if likes == 1 else 's'} liked for it"
    if compares_likes(watchlist, likes):
        more = (f"; from {MIN_LIKES} likes, and a paper to set them against, its ranking "
                "also learns from them" if likes < MIN_LIKES else "")
        return f"From the next run, {name} looks for papers alike to the {liked}{more}."
    if likes < MIN_LIKES:
        return (f"{name} has {likes} of the {MIN_LIKES} likes its ranking needs before it "
                "learns from them.")
    return f"From the next run, the ranking of {name} learns from the {liked}."
