"""The SQLite store: papers and their sightings, source state, digests and deliveries."""

from digest.store.db import LeftOut, LeftOutPage, OpenDigest, RatingOutcome, Store

__all__ = ["LeftOut", "LeftOutPage", "OpenDigest", "RatingOutcome", "Store"]
