#!/usr/bin/env python3
"""How alike two fits of one user are, layer by layer (README, Measured, "On a GPU").

usage: scripts/compare_profiles.py DB_A DB_B USER

Takes USER's latest profile in each store (for example the same fit run on the CPU and on the GPU) and
prints, for every layer both hold, |cos| between the two personal directions p and between the two
generic directions n.
"""
import math
import sqlite3
import struct
import sys


def unit(blob):
    v = struct.unpack(f"<{len(blob) // 4}f", blob)
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def latest(db, user):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    row = c.execute("SELECT p.id FROM profiles p JOIN users u ON u.id = p.user_id WHERE u.name = ? "
                    "ORDER BY p.id DESC LIMIT 1", (user,)).fetchone()
    if row is None:
        raise SystemExit(f"{db}: no profile of user `{user}`")
    rows = c.execute("SELECT layer, p, n FROM profile_layers WHERE profile_id = ?", (row[0],))
    return {layer: (unit(p), unit(n)) for layer, p, n in rows}


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.strip().splitlines()[2])
    a, b = latest(sys.argv[1], sys.argv[3]), latest(sys.argv[2], sys.argv[3])
    for layer in sorted(set(a) & set(b)):
        cp = abs(sum(x * y for x, y in zip(a[layer][0], b[layer][0])))
        cn = abs(sum(x * y for x, y in zip(a[layer][1], b[layer][1])))
        print(f"layer {layer}: |cos| p {cp:.4f}, n {cn:.4f}")


if __name__ == "__main__":
    main()
