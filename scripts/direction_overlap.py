#!/usr/bin/env python3
"""How alike different users' fitted directions are (docs/evaluation.md, Findings).

usage: scripts/direction_overlap.py DB [--pairs label|reasoned] [--direction svd|contrast] [--k K]
                                    [--split SPLIT] [--answer-tokens N] [--insight-tokens N]
                                    [--prompt-version V]

Takes the latest offline user profile of each user in DB fitted with those settings (mean pooling,
centred CCS, the defaults of `eval`'s LaMP runs in docs/evaluation.md) and prints, over the middle half of the
layers (the `mid:N` band), the mean |cos| between two different users' personal directions p and
generic directions n, next to what two random directions give (sqrt(2 / (pi d))). A p that is nearly the
same for every user cannot say anything about one of them. For every group profile fitted with the same
settings (`eval --methods chameleon-group`), one more line: the mean |cos| between the group's p and
each user's p.
"""
import argparse
import itertools
import json
import math
import sqlite3
import struct


def unit(blob):
    v = struct.unpack(f"<{len(blob) // 4}f", blob)
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--pairs", default="label", choices=["label", "reasoned"])
    ap.add_argument("--direction", default="svd", choices=["svd", "contrast"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--split", help="only LaMP users of this split (eval names them lamp:SET/SPLIT/ID)")
    ap.add_argument("--answer-tokens", type=int, default=24)
    ap.add_argument("--insight-tokens", type=int, default=64)
    ap.add_argument("--prompt-version", type=int, default=3)
    a = ap.parse_args()
    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    def matches(params):
        p = json.loads(params)
        f = p["fit"]
        return (p.get("prompt_version") == a.prompt_version and f["mode"] == "offline" and f["k"] == a.k
                and f["answer_tokens"] == a.answer_tokens and f["insight_tokens"] == a.insight_tokens
                and f.get("pair_answers", "label") == a.pairs
                and f.get("personal_direction", "svd") == a.direction
                and f["pooling"] == "mean" and f["ccs"]["normalize"])

    latest = {}
    for pid, uid, name, params, n_layer, hidden in db.execute(
            "SELECT p.id, p.user_id, u.name, p.params, p.n_layer, p.hidden FROM profiles p "
            "JOIN users u ON u.id = p.user_id ORDER BY p.id"):
        if matches(params) and (a.split is None or f"/{a.split}/" in name):
            latest[uid] = (pid, n_layer, hidden)
    if len(latest) < 2:
        raise SystemExit(f"{a.db}: {len(latest)} matching user profiles; need at least 2")
    n_layer, hidden = next(iter(latest.values()))[1:]
    band = range(n_layer // 4, min(max(-(-3 * n_layer // 4), n_layer // 4 + 1), n_layer))  # pipeline::mid_band

    def directions(pid):
        rows = db.execute("SELECT layer, p, n FROM profile_layers WHERE profile_id = ?", (pid,))
        return {layer: (unit(p), unit(n)) for layer, p, n in rows if layer in band}

    dirs = {uid: directions(pid) for uid, (pid, _, _) in latest.items()}
    cos_p, cos_n = [], []
    for u, w in itertools.combinations(dirs, 2):
        for layer in band:
            (pu, nu), (pw, nw) = dirs[u][layer], dirs[w][layer]
            cos_p.append(abs(sum(x * y for x, y in zip(pu, pw))))
            cos_n.append(abs(sum(x * y for x, y in zip(nu, nw))))
    print(f"{a.db}: {len(dirs)} users ({a.pairs} pairs, {a.direction}), layers {band.start}-{band.stop - 1}: "
          f"mean |cos| between users: p {sum(cos_p) / len(cos_p):.3f}, n {sum(cos_n) / len(cos_n):.3f}; "
          f"random directions {math.sqrt(2 / (math.pi * hidden)):.3f}")
    for name, pid, params in db.execute(
            "SELECT g.name, p.id, p.params FROM profiles p JOIN groups g ON g.id = p.group_id ORDER BY g.name"):
        if not matches(params):
            continue
        members = json.loads(params).get("members", [])
        group = directions(pid)
        cos = [abs(sum(x * y for x, y in zip(group[layer][0], d[layer][0]))) for d in dirs.values() for layer in band]
        print(f"  group {name} ({len(members)} members): mean |cos| between its p and a user's p "
              f"{sum(cos) / len(cos):.3f}")


if __name__ == "__main__":
    main()
