#!/usr/bin/env python3
"""Paired comparison of `chameleon eval` predictions against `instruct`.

    scripts/eval_compare.py PRED.json [BASELINE.json] [--base METHOD]

For every method in PRED.json: how many raw answers differ from `instruct`'s, empty answers, and (LaMP-1/2:
accuracy, LaMP-3: negative absolute error, LaMP-4..7: ROUGE-1 F-measure, tokenised as `eval` does) the
mean paired difference with a 95% bootstrap interval over
questions (2000 resamples, seed 0). `instruct` comes from BASELINE.json when given (a run of other
methods on the same questions), else from PRED.json. For an edited method whose predictions say which
users had a profile (`profiled`), a second line compares it on those users' questions only: the others
are answered as `instruct`. `--base METHOD` compares against another method than `instruct` (say
`chameleon` against the `other-user` control: the same users edited, each by another user's profile),
and then also says how many of the answers the base changes from `instruct`'s each method changes too.
"""
import json
import random
import sys

from lamp_data import rouge1


def by_method(path):
    out = {}
    for p in json.load(open(path))["predictions"]:
        out.setdefault(p["method"], {})[p["id"]] = p
    return out


def score(task, p):
    if task in ("LaMP_1", "LaMP_2"):
        return float(p["answer"].strip() == p["gold"].strip())
    if task == "LaMP_3":
        g = float(p["gold"])
        try:
            a = float(p["answer"])
        except ValueError:
            a = None
        if a is None or not 1 <= a <= 5:
            a = 1 if abs(1 - g) > abs(5 - g) else 5
        return -abs(a - g)
    return rouge1(p["gold"], p["answer"])


def paired(task, ps, base, ids):
    """Mean paired score difference over `ids` with its 95% bootstrap interval, as text."""
    diffs = [score(task, ps[i]) - score(task, base[i]) for i in ids]
    rng = random.Random(0)
    n = len(diffs)
    boots = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(2000))
    return f"diff {sum(diffs) / n:+.3f} [{boots[50]:+.3f}, {boots[1949]:+.3f}]"


def main():
    args = sys.argv[1:]
    name = "instruct"
    if "--base" in args:
        i = args.index("--base")
        name = args[i + 1]
        del args[i : i + 2]
    doc = json.load(open(args[0]))
    task = doc["task"]
    methods = by_method(args[0])
    base = by_method(args[1] if len(args) > 1 else args[0])[name]
    print(doc["set"], doc["split"], doc["model"], doc["questions"], "questions")
    for m, ps in methods.items():
        ids = [i for i in base if i in ps]
        changed = sum(ps[i]["raw"] != base[i]["raw"] for i in ids)
        empty = sum(not ps[i]["raw"].strip() for i in ids)
        print(f"{m:18s} changed vs {name} {changed}/{len(ids)}, empty {empty}, {paired(task, ps, base, ids)}")
        if name != "instruct" and "instruct" in methods and m not in (name, "instruct"):
            # do the method and the base change the same answers of `instruct`, and to the same?
            ins = methods["instruct"]
            moved = lambda d: {i for i in ids if d[i]["raw"] != ins[i]["raw"]}
            both = moved(ps) & moved(base)
            same = sum(ps[i]["answer"] == base[i]["answer"] for i in both)
            print(
                f"{'':18s} of the {len(moved(base))} answers {name} changes from instruct's, {len(both)} "
                f"are changed by {m} too, {same} to the same answer"
            )
        mine = [i for i in ids if ps[i].get("profiled")]
        if mine and len(mine) < len(ids):
            users = len({ps[i]["user"] for i in mine})
            mean = lambda d: sum(score(task, d[i]) for i in mine) / len(mine)
            print(
                f"{'':18s} users with a profile ({users}, {len(mine)} questions): "
                f"{mean(ps):.3f} vs {name} {mean(base):.3f}, {paired(task, ps, base, mine)}"
            )


main()
