#!/usr/bin/env python3
"""Facts about a LaMP split that the README quotes (README, Evaluation and Findings).

usage: scripts/lamp_data.py DIR SPLIT [--limit N]

Prints the split's users and how many of them have the same profile item twice (same input text: a
MovieLens user who tagged a film twice; `eval` keeps both, and their leave-one-out pairs are two pairs),
and, for a text task (LaMP-4..7), the ROUGE-1 F-measure of copying the question's input (the text after
the instruction's first colon) as the answer: the trivial baseline of a paraphrase task. ROUGE is
computed as `chameleon eval` computes it (lower-case, runs of [a-z0-9] as tokens, no stemming, the mean
of per-question F-measures). --limit N: the first N questions only, as `eval --limit N` answers.
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
    outputs = json.load(open(f"{args.dir}/{args.split}_outputs.json"))
    gold = {g["id"]: g["output"] for g in outputs["golds"]}

    profiles = {}
    for q in questions:
        profiles.setdefault(q.get("user_id", q["id"]), q["profile"])
    repeated = sum(
        len({item_text(i) for i in p}) < len(p) for p in profiles.values()
    )
    print(f"{len(questions)} questions, {len(profiles)} users, {repeated} with a repeated profile item")

    if outputs["task"] in ("LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"):
        inputs = [q["input"].split(":", 1)[-1] for q in questions]
        copy = sum(rouge1(gold[q["id"]], i) for q, i in zip(questions, inputs)) / len(questions)
        print(f"copying the input: ROUGE-1 {copy:.3f}")


if __name__ == "__main__":
    main()
