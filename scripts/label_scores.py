#!/usr/bin/env python3
"""How the `labels` way should score the user's answers, decided offline from `eval --label-scores`.

    scripts/label_scores.py SCORES.jsonl [--first N]

Each line of SCORES.jsonl is one question: the labels, how often the user gave each (`counts`), the
gold answer, and each label's summed log-probability after the user's prompt (`full`), after that
prompt with the request `N/A` (`cf`), and after the request alone, without history (`bare`). For the
first N questions (all by default) it prints the accuracy of choosing among the user's own answers by

- `full`, `full / tokens` (per token), `full - cf` (calibrated on `N/A`, arXiv 2102.09690) and
  `full - bare` (what the history adds), each plus `P * ln(1 + count)` for P in 0 .. 16;
- `frequent`: the most frequent answer, the model (`full`) telling equally frequent ones apart;
- the floor: the most frequent answer, the first given among equally frequent ones (`no-model`).
"""
import json
import math
import sys


def main():
    args = sys.argv[1:]
    first = None
    if "--first" in args:
        i = args.index("--first")
        first = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    rows = [json.loads(line) for line in open(args[0]) if line.strip()]
    rows = rows[:first] if first else rows

    def norm(s):
        return s.strip().lower()

    def accuracy(key):
        right = 0
        for r in rows:
            own = [i for i, n in enumerate(r["counts"]) if n > 0]
            if not own:
                continue
            best = max(own, key=lambda i: (key(r, i), -i))
            right += norm(r["labels"][best]) == norm(r["gold"])
        return right / len(rows)

    users = len({r["user"] for r in rows})
    print(f"{len(rows)} questions, {users} users\n")
    scorings = {
        "full": lambda r, i: r["full"][i],
        "full / tokens": lambda r, i: r["full"][i] / max(r["tokens"][i], 1),
        "full - cf (N/A)": lambda r, i: r["full"][i] - r["cf"][i],
        "full - bare": lambda r, i: r["full"][i] - r["bare"][i],
    }
    weights = [0, 0.5, 1, 2, 4, 8, 16]
    print("| scoring | " + " | ".join(f"P = {p:g}" for p in weights) + " |")
    print("|---|" + "---:|" * len(weights))
    for name, f in scorings.items():
        cells = [
            accuracy(lambda r, i, p=p, f=f: f(r, i) + p * math.log1p(r["counts"][i]))
            for p in weights
        ]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    frequent = accuracy(lambda r, i: (r["counts"][i], r["full"][i]))
    floor = accuracy(lambda r, i: r["counts"][i])
    print(f"\nfrequent {frequent:.3f}, floor (no-model) {floor:.3f}")


if __name__ == "__main__":
    main()
