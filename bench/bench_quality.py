"""Benchmark: precision, recall and F1 per watchlist on the labelled evaluation set,
beside a plain word-boundary keyword baseline run on the same papers.

Run: .venv/bin/python bench/bench_quality.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evaluation import evaluate, keyword_baseline, load, micro, scorer  # noqa: E402


def main() -> None:
    papers, relevant, settings = load()
    ours = evaluate(scorer(papers, settings), papers, relevant, settings)
    base = evaluate(keyword_baseline(papers), papers, relevant, settings)
    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"set: tests/eval/papers.jsonl, {len(papers)} papers, {len(settings.watchlists)} "
          "watchlists (tests/eval/watchlists.toml)")
    print("baseline: each watchlist's keywords as case-insensitive whole words, nothing else\n")
    print(f"{'watchlist':20} {'relevant':>8}   {'paper-digest P / R / F1':>24}   "
          f"{'baseline P / R / F1':>20}")
    for name in ours:
        o, b = ours[name], base[name]
        print(f"{name:20} {len(relevant.get(name, ())):8}   "
              f"{o.precision:8.3f} {o.recall:6.3f} {o.f1:6.3f}   "
              f"{b.precision:6.3f} {b.recall:6.3f} {b.f1:6.3f}")
    o, b = micro(ours), micro(base)
    print(f"{'all (micro)':20} {'':8}   {o.precision:8.3f} {o.recall:6.3f} {o.f1:6.3f}   "
          f"{b.precision:6.3f} {b.recall:6.3f} {b.f1:6.3f}")


if __name__ == "__main__":
    main()
