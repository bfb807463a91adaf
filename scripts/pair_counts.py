#!/usr/bin/env python3
"""What the stored LaMP-2 pairs and insights of one prompt version hold (docs/evaluation.md, Findings).

usage: scripts/pair_counts.py DB VERSION [SPLIT]

SPLIT (`dev`, `train`) counts only the LaMP users of that split, for a store that also holds the
other split's users (a group run).

Pairs: how many have two different replies, and of those how many give the same tag once the history
block's format is removed (mirrors `prompts::pair_answer`), how many hold two tags of the list.
Insights: how many hold a history label or a list number, how many do not start as asked, how many
neutral ones are the fallback sentence; and whether users whose personal insight is only an opening
get differing pairs (and so a profile) less often than the others.
"""
import re
import sqlite3
import sys

LABELS = ["sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
          "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
          "violence", "true story"]
ANSWER = ["The user's tag:", "The user's rating:", "The user's answer:", "The user wrote:"]
BLOCK = ["Here is what this user did before", "Item:", "Review:", "Request:"] + ANSWER
# a neutral insight with nothing left after the cut (prompts::generic_behaviour)
FALLBACKS = {"A generic answer would pick the most common, obvious label for an item.",
             "A generic answer would rate an item the way an average customer would.",
             "A generic answer would answer in a plain, standard, impersonal way."}
# LaMP-2 label pairs of one prompt version (not reasoned ones)
LABEL_PAIRS = ("prompt_version = ? AND query LIKE 'Which one of these tags%' "
               "AND history_hash NOT LIKE '%/answers=reasoned/%' ")
ECHO = re.compile(r"(Item:|Review:|The user's tag:|The user's rating:|The user wrote:|Request:|(^|\s)\d+\.\s)")


def label_pattern(label):
    body = "[ _-]+".join(re.escape(w) for w in re.split(r"[ -]", label))
    return re.compile(r"(?<![A-Za-z0-9])" + body + r"(?![A-Za-z0-9])", re.I)


PATTERNS = sorted(((l, label_pattern(l)) for l in LABELS), key=lambda x: -len(x[0]))


def first_label(text):
    found = [(m.start(), -len(l), l) for l, p in PATTERNS if (m := p.search(text))]
    return min(found)[2] if found else None


def answer(reply):
    t = reply.strip()
    while any(t.startswith(a) for a in ANSWER):
        t = t[len(next(a for a in ANSWER if t.startswith(a))):].lstrip()
    t = t[:min([t.find(b) for b in BLOCK if b in t] + [len(t)])].strip()
    return first_label(t) or (t.splitlines()[0].strip() if t else "")


def main():
    db, version = sys.argv[1], int(sys.argv[2])
    users = f"%/{sys.argv[3]}/%" if len(sys.argv) > 3 else "%"
    of_split = "AND user_id IN (SELECT id FROM users WHERE name LIKE ?)"
    c = sqlite3.connect(db)
    rows = c.execute("SELECT personal, neutral FROM pairs WHERE " + LABEL_PAIRS + of_split,
                     (version, users)).fetchall()
    differ = [(answer(p), answer(n)) for p, n in rows if p.strip() != n.strip()]
    same = sum(a == b and a != "" for a, b in differ)
    empty = sum(a == "" or b == "" for a, b in differ)
    tags = sum(a in LABELS and b in LABELS and a != b for a, b in differ)
    print(f"LaMP-2 pairs {len(rows)}; replies differ {len(differ)}: same tag after the format {same}, "
          f"an empty answer {empty}, two different tags of the list {tags}")
    reasoned = c.execute("SELECT personal, neutral FROM pairs WHERE prompt_version = ? "
                         "AND query LIKE 'Which one of these tags%' AND history_hash LIKE '%/answers=reasoned/%' "
                         + of_split, (version, users)).fetchall()
    if reasoned:
        split = [tuple(a.split(", because ", 1) + [""])[:2] for pair in reasoned for a in pair]
        with_reason = sum(r != "" for _, r in split)
        differ = [(p, n) for p, n in reasoned if p.strip() and n.strip() and p.strip() != n.strip()]
        same_tag = sum(p.split(", because ")[0] == n.split(", because ")[0] for p, n in differ)
        print(f"reasoned LaMP-2 pairs {len(reasoned)}; answers with a reason {with_reason} of {len(split)}; "
              f"pairs that differ {len(differ)}, of them the same tag with another reason {same_tag}")
    for kind, lead in [("personal", "This user"), ("neutral", "A generic answer")]:
        texts = [t for (t,) in c.execute("SELECT text FROM insights WHERE prompt_version = ? AND kind = ? "
                                          + of_split, (version, kind, users))]
        echo = sum(bool(ECHO.search(t)) for t in texts)
        unasked = sum(not t.strip().startswith(lead) for t in texts)
        fallback = sum(t in FALLBACKS for t in texts)
        opening = sum(t.strip().endswith(":") for t in texts)
        print(f"{kind} insights {len(texts)}: history label or list number {echo}, "
              f"not starting as asked {unasked}, fallback sentence {fallback}, only an opening ending in ':' {opening}")

    # does the personal insight's content decide whether a user's pairs differ? users whose personal
    # insight is only an opening ("This user likes the following items:") against the others
    opening_users = {u for u, t in c.execute("SELECT user_id, text FROM insights WHERE prompt_version = ? "
                                              "AND kind = 'personal' " + of_split, (version, users))
                     if t.strip().endswith(":")}
    per_user = c.execute("SELECT user_id, SUM(personal <> neutral), COUNT(*) FROM pairs WHERE " + LABEL_PAIRS
                         + of_split + " GROUP BY user_id", (version, users)).fetchall()
    profiled = {u for (u,) in c.execute("SELECT DISTINCT user_id FROM profiles WHERE user_id IS NOT NULL")}
    for name, keep in [("only an opening", lambda u: u in opening_users),
                       ("with content", lambda u: u not in opening_users)]:
        rows = [(u, d, n) for u, d, n in per_user if keep(u)]
        print(f"users whose personal insight is {name}: {len(rows)}; their pairs differ "
              f"{sum(d for _, d, _ in rows)} of {sum(n for _, _, n in rows)}; users with a stored profile "
              f"{sum(u in profiled for u, _, _ in rows)}")


if __name__ == "__main__":
    main()
