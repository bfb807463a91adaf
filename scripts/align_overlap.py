#!/usr/bin/env python3
"""How alike different users' real-answer directions are (`--route align`; docs/evaluation.md).

usage: scripts/align_overlap.py DB [--split SPLIT]

Takes every real-answer profile in DB (a user's own fitted with `--route align`/`auto`, or the
`<user>#align` groups `eval`'s align methods fit) and prints, over the middle half of the layers (the
`mid:N` band), the mean |cos| between two different users' directions c, next to what two random
directions give (sqrt(2 / (pi d))), and the mean agreement of the users' items (mean pairwise cosine
of their differences) in the band. Compare with scripts/direction_overlap.py for the paper's p.
Where the profiles hold the `words` bias (fit version 7 on), it prints the same for the biases: the
mean |cos| between two users' bias vectors over the vocabulary (a token neither user biases counts
as 0), and how many users' biases share no token at all.
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
    return None if n == 0 else [x / n for x in v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--split", help="only LaMP users of this split (eval names them lamp:SET/SPLIT/ID)")
    a = ap.parse_args()
    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT p.id, COALESCE(u.name, g.name), p.params, p.n_layer, p.hidden FROM profiles p "
        "LEFT JOIN users u ON u.id = p.user_id LEFT JOIN groups g ON g.id = p.group_id ORDER BY p.id")
    latest = {}
    for pid, name, params, n_layer, hidden in rows:
        p = json.loads(params)
        if p.get("fit", {}).get("route") not in ("align", "auto") or "align" not in p:
            continue
        if a.split is not None and f"/{a.split}/" not in name:
            continue
        latest[name.removesuffix("#align")] = (pid, p, n_layer, hidden)
    if len(latest) < 2:
        raise SystemExit(f"{a.db}: {len(latest)} real-answer profiles; need at least 2")
    n_layer, hidden = next(iter(latest.values()))[2:]
    band = range(n_layer // 4, min(max(-(-3 * n_layer // 4), n_layer // 4 + 1), n_layer))  # pipeline::mid_band

    def directions(pid):
        rows = db.execute("SELECT layer, p FROM profile_layers WHERE profile_id = ?", (pid,))
        return {layer: unit(c) for layer, c in rows if layer in band}

    dirs = {name: directions(pid) for name, (pid, _, _, _) in latest.items()}
    cos = []
    for u, w in itertools.combinations(dirs, 2):
        for layer in band:
            cu, cw = dirs[u].get(layer), dirs[w].get(layer)
            if cu is not None and cw is not None:
                cos.append(abs(sum(x * y for x, y in zip(cu, cw))))
    agree = [p["align"]["agree"][layer] for (_, p, _, _) in latest.values() for layer in band]
    items = [p["align"]["items"] for (_, p, _, _) in latest.values()]
    print(f"{a.db}: {len(dirs)} users, layers {band.start}-{band.stop - 1}: mean |cos| between users' c "
          f"{sum(cos) / len(cos):.3f}; random directions {math.sqrt(2 / (math.pi * hidden)):.3f}; "
          f"mean agreement of a user's items {sum(agree) / len(agree):.3f}; "
          f"items per user {sum(items) / len(items):.1f}")
    words = {name: dict(p["words"]) for name, (_, p, _, _) in latest.items() if p.get("words")}
    if len(words) >= 2:
        wcos = [bias_cos(words[u], words[w]) for u, w in itertools.combinations(words, 2)]
        print(f"{a.db}: {len(words)} users with a `words` bias ({sum(map(len, words.values())) / len(words):.1f} "
              f"tokens each): mean |cos| between users' biases {sum(wcos) / len(wcos):.3f}, "
              f"{sum(c == 0 for c in wcos)} of {len(wcos)} pairs share no token")


def bias_cos(a, b):
    """|cos| of two sparse bias vectors (token -> bias)."""
    dot = sum(v * b[t] for t, v in a.items() if t in b)
    na, nb = math.sqrt(sum(v * v for v in a.values())), math.sqrt(sum(v * v for v in b.values()))
    return 0.0 if na == 0 or nb == 0 else abs(dot) / (na * nb)


if __name__ == "__main__":
    main()
