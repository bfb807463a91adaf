#!/usr/bin/env python3
"""Would a vote of the user's history items nearest the request beat counting their answers? No model.

    scripts/nearest_vote.py SET_DIR SPLIT [--first N]

For LaMP-2 (tags) each question is answered by the tag whose profile items together score highest
under Okapi BM25 against the request (the sum of their scores; equal sums by count), and compared,
paired, with the most frequent tag (the floor, `no-model`). Two analyzers: LaMP's (whitespace tokens,
case kept, `rank_bm25`'s idf, as chameleon's retrieval) and Lucene's English default (lower-cased word
tokens without its 33 stop words, Lucene's idf). Prints accuracy and the difference's 95% bootstrap
interval (paired, 4000 draws).
"""
import json
import math
import random
import re
import sys
from collections import Counter

LUCENE_STOP = set(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)


def okapi_rank_bm25(corpus, query, k1=1.5, b=0.75, eps=0.25):
    n = len(corpus)
    dl = [len(d) for d in corpus]
    avg = sum(dl) / n
    df, order = Counter(), []
    for d in corpus:
        for t in dict.fromkeys(d):
            if t not in df:
                order.append(t)
            df[t] += 1
    idf = {t: math.log(n - df[t] + 0.5) - math.log(df[t] + 0.5) for t in order}
    floor = eps * sum(idf.values()) / len(idf) if idf else 0.0
    idf = {t: (v if v >= 0 else floor) for t, v in idf.items()}
    return score(corpus, query, idf, dl, avg, k1, b)


def okapi_lucene(corpus, query, k1=1.2, b=0.75):
    n = len(corpus)
    dl = [len(d) for d in corpus]
    avg = sum(dl) / n
    df = Counter()
    for d in corpus:
        df.update(set(d))
    idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    return score(corpus, query, idf, dl, avg, k1, b)


def score(corpus, query, idf, dl, avg, k1, b):
    tfs = [Counter(d) for d in corpus]
    s = [0.0] * len(corpus)
    if avg == 0:
        return s
    for q in query:
        if q not in idf:
            continue
        for i, tf in enumerate(tfs):
            f = tf[q]
            s[i] += idf[q] * f * (k1 + 1) / (f + k1 * (1 - b + b * dl[i] / avg))
    return s


ANALYZERS = {
    "LaMP (whitespace, rank_bm25)": (str.split, okapi_rank_bm25),
    "Lucene English (stop words, Lucene idf)": (
        lambda s: [w for w in re.findall(r"\w+", s.lower()) if w not in LUCENE_STOP],
        okapi_lucene,
    ),
}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root, split = sys.argv[1], sys.argv[2]
    first = int(sys.argv[sys.argv.index("--first") + 1]) if "--first" in sys.argv else None
    questions = json.load(open(f"{root}/{split}_questions.json"))[:first]
    gold = {g["id"]: g["output"].strip() for g in json.load(open(f"{root}/{split}_outputs.json"))["golds"]}
    for name, (tokens, bm25) in ANALYZERS.items():
        frequent, nearest = [], []
        for q in questions:
            items = [(p["description"], p["tag"].strip()) for p in q["profile"] if p.get("tag", "").strip()]
            tags = [t for _, t in items]
            count = Counter(tags)
            seen = {t: -i for i, t in reversed(list(enumerate(tags)))}
            sims = bm25([tokens(d) for d, _ in items], tokens(q["input"]))
            mass = Counter()
            for s, t in zip(sims, tags):
                mass[t] += max(s, 0.0)
            frequent.append(max(count, key=lambda t: (count[t], seen[t])) == gold[q["id"]])
            nearest.append(max(count, key=lambda t: (mass[t], count[t], seen[t])) == gold[q["id"]])
        n = len(questions)
        d = [int(b) - int(a) for a, b in zip(frequent, nearest)]
        random.seed(1)
        draws = sorted(sum(random.choice(d) for _ in d) / n for _ in range(4000))
        print(
            f"{name}: nearest {sum(nearest) / n:.3f} ({sum(nearest)}/{n}), "
            f"most frequent {sum(frequent) / n:.3f}, difference {sum(d) / n:+.3f} "
            f"[{draws[100]:+.3f}, {draws[3899]:+.3f}], {sum(1 for x in d if x)} right/wrong changes"
        )


if __name__ == "__main__":
    main()
