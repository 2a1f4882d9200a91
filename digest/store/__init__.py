"""The SQLite store: papers and their sightings, source state, digests and deliveries."""

from digest.store.db import (
    FOUND_LISTED,
    LeftOut,
    LeftOutPage,
    OpenDigest,
    RatingOutcome,
    Store,
    found_several,
)

__all__ = ["FOUND_LISTED", "LeftOut", "LeftOutPage", "OpenDigest", "RatingOutcome", "Store",
           "found_several"]
