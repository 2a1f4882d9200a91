"""The web app: one-click rating links from digests, served by uvicorn (see app.py)."""
