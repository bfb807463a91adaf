#!/usr/bin/env python3
"""Which way a method moves LaMP-2 answers: toward the user's most frequent tag, or away from it.

    scripts/top_tag_moves.py RUN.json NOMODEL.json

RUN.json: an `eval` run with `instruct` and some of `chameleon`, `p-only`, `other-user`,
`chameleon-group`, `insight-prompt`; NOMODEL.json: a run of `no-model` on the same questions (its answer
is each user's most frequent tag). For every method, of the answers it changes from `instruct`'s: how
many it turns into the user's most frequent tag, and how many were that tag before. For `other-user`
also how many it turns into the most frequent tag of the user whose profile answered (the next user
with a profile, in the split's order, as `eval` lends them): if a profile carried its owner's taste in
tags, it would push another user's answers toward the owner's tag.
"""
import json
import sys


def predictions(path):
    out = {}
    for p in json.load(open(path))["predictions"]:
        out.setdefault(p["method"], {})[p["id"]] = p
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run, floor = predictions(sys.argv[1]), predictions(sys.argv[2])["no-model"]
    base = run["instruct"]
    order = []  # users in the split's order (of their first question)
    for p in base.values():
        if p["user"] not in order:
            order.append(p["user"])
    top = {}
    for p in floor.values():
        top.setdefault(p["user"], p["answer"])
    own = run.get("chameleon", {}).values()
    profiled = [u for u in order if any(p["user"] == u and p.get("profiled") for p in own)]
    donor = {u: profiled[(k + 1) % len(profiled)] for k, u in enumerate(profiled)}
    for method in ("insight-prompt", "chameleon", "p-only", "other-user", "chameleon-group"):
        if method not in run:
            continue
        answers = run[method]
        changed = [i for i in base if answers[i]["answer"] != base[i]["answer"]]
        toward = sum(answers[i]["answer"] == top[base[i]["user"]] for i in changed)
        away = sum(base[i]["answer"] == top[base[i]["user"]] for i in changed)
        line = f"{method:16} {len(changed):3} answers changed: {toward} into the user's most frequent tag, {away} out of it"
        if method == "other-user" and len(profiled) >= 2:
            lent = sum(
                answers[i]["answer"] == top[donor[base[i]["user"]]]
                for i in changed
                if base[i]["user"] in donor
            )
            line += f", {lent} into the lending user's"
        print(line)


if __name__ == "__main__":
    main()
