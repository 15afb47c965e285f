"""Side-by-side table of two `purerun microbenchmark --json` results (e.g. purerun vs Ray).

Run: python benchmarks/compare.py purerun.json ray.json
(both from ``--scale`` runs: a table of seconds per row and cost per item)
"""

import json
import sys


def main(ours_path, theirs_path):
    with open(ours_path) as f:
        ours = json.load(f)
    with open(theirs_path) as f:
        theirs = json.load(f)
    theirs_rows = {row["name"]: row for row in theirs["rows"]}
    a, b = ours["backend"], theirs["backend"]
    if ours.get("mode") == "scale":
        _scale_table(ours, theirs_rows, a, b)
        return
    print(f"| row (per second) | {a} | {b} | {a}/{b} |")
    print("|---|---:|---:|---:|")
    for key, label, better_low in (("init_to_first_result_s", "init to first result (s)", True),
                                   ("shutdown_s", "shutdown (s)", True),
                                   ("idle_rss_mib", "idle cluster RSS (MiB)", True),
                                   ("idle_uss_mib", "idle cluster USS (MiB)", True),
                                   ("idle_processes", "idle cluster processes", True)):
        x, y = ours["extra"].get(key), theirs["extra"].get(key)
        if x is not None and y is not None:
            ratio = (y / x if better_low else x / y) if x else float("inf")
            print(f"| {label} | {x:.3g} | {y:.3g} | {ratio:.1f}x better |")
    for row in ours["rows"]:
        other = theirs_rows.get(row["name"])
        if other is None:
            continue
        print(f"| {row['name']} | {row['median']:,.1f} | {other['median']:,.1f} | "
              f"{row['median'] / other['median']:.1f} |")


def _scale_table(ours, theirs_rows, a, b):
    """``--scale`` results: seconds per row (lower is better) and cost per item."""
    print(f"| row | {a} s | {b} s | {b}/{a} | {a} us/item | {b} us/item |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in ours["rows"]:
        other = theirs_rows.get(row["name"])
        if other is None:
            continue
        print(f"| {row['name']} | {row['seconds']:.3f} | {other['seconds']:.3f} | "
              f"{other['seconds'] / row['seconds']:.2f}x | {row['per_item_us']:,.1f} | "
              f"{other['per_item_us']:,.1f} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
