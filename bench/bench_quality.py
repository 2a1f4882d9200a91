"""Benchmark: precision, recall and F1 per watchlist on the labelled evaluation set,
beside a plain word-boundary keyword baseline run on the same papers.

Run: .venv/bin/python bench/bench_quality.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evaluation import (  # noqa: E402
    evaluate,
    keyword_baseline,
    load,
    load_cases,
    macro_f1,
    micro,
    scorer,
)


def table(ours: dict, base: dict, relevant: dict) -> None:
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
    print(f"{'macro-F1':20} {'':8}   {macro_f1(ours):22.3f}   {macro_f1(base):20.3f}")


def main() -> None:
    papers, relevant, settings = load()
    ours = evaluate(scorer(papers, settings), papers, relevant, settings)
    base = evaluate(keyword_baseline(papers), papers, relevant, settings)
    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"set: tests/eval/papers.jsonl, {len(papers)} papers, {len(settings.watchlists)} "
          "watchlists (tests/eval/watchlists.toml)")
    print("baseline: each watchlist's keywords as case-insensitive whole words, nothing else\n")
    table(ours, base, relevant)

    papers, relevant, settings, scope = load_cases()
    ours = evaluate(scorer(papers, settings), papers, relevant, settings, scope)
    base = evaluate(keyword_baseline(papers), papers, relevant, settings, scope)
    print(f"\ncases: tests/eval/watchlist_cases.jsonl, {len(papers)} papers, "
          f"{len(settings.watchlists)} watchlists (tests/eval/watchlist_cases.toml), each "
          "written with one feature\n(query as a gate, British spellings and plurals, "
          "overlapping terms, categories and authors from arXiv)\nand judged on the papers "
          "written for it; the baseline reads the same papers\n")
    table(ours, base, relevant)
    listed, relevant, settings, scope = load_cases(arxiv_facts=False)
    bare = evaluate(scorer(listed, settings), listed, relevant, settings, scope)
    print("\nwithout arXiv's categories and authors (as Hugging Face lists the papers): "
          + ", ".join(f"{name} F1 {s.f1:.3f}" for name, s in bare.items()
                      if s.f1 != ours[name].f1))


if __name__ == "__main__":
    main()
