"""The SQLite store: papers and their sightings, source state, digests and deliveries."""

from digest.store.db import OpenDigest, RatingOutcome, Store

__all__ = ["OpenDigest", "RatingOutcome", "Store"]
