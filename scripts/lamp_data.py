#!/usr/bin/env python3
"""Facts about a LaMP split that docs/evaluation.md quotes.

usage: scripts/lamp_data.py DIR SPLIT [--limit N]

Prints the split's users and how many of them have the same profile item twice (same input text: a
MovieLens user who tagged a film twice; `eval` keeps both, and their leave-one-out pairs are two pairs).
--limit N: the first N questions only, as `eval --limit N` answers. (The trivial baselines, copying a
tweet, counting a user's tags, are `chameleon eval --methods no-model`.) `rouge1` is the ROUGE-1
F-measure `chameleon eval` computes, for `eval_compare.py`.
"""
import argparse
import json
import re
from collections import Counter


def tokens(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge1(reference, prediction):
    """ROUGE-1 F-measure without stemming, tokenised as `metrics::rouge_tokens`."""
    ref, pred = tokens(reference), tokens(prediction)
    matched = sum((Counter(ref) & Counter(pred)).values())
    if matched == 0:
        return 0.0
    p, r = matched / len(pred), matched / len(ref)
    return 2 * p * r / (p + r)


def item_text(item):
    # LaMP-2: description; LaMP-3: text; LaMP-7: text; fall back to the whole item
    return item.get("description") or item.get("text") or json.dumps(item, sort_keys=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("split")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    questions = json.load(open(f"{args.dir}/{args.split}_questions.json"))[: args.limit]

    profiles = {}
    for q in questions:
        profiles.setdefault(q.get("user_id", q["id"]), q["profile"])
    repeated = sum(
        len({item_text(i) for i in p}) < len(p) for p in profiles.values()
    )
    print(f"{len(questions)} questions, {len(profiles)} users, {repeated} with a repeated profile item")


if __name__ == "__main__":
    main()
