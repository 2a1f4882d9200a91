"""paper-digest: daily research-paper digests scored against your watchlists."""

__version__ = "0.1.0"
