"""The SQLite store: papers and their sightings, source state, digests and deliveries."""

from digest.store.db import OpenDigest, Store

__all__ = ["OpenDigest", "Store"]
