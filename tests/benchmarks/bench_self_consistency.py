"""Self-consistency benchmark (issue 5, "must show" 1): refine surrogate images of known Pt particles.

The work is done by ``examples/self_consistency.py`` (read its docstring for
the three cases, the noise model and the model used); this runner adds the
issue's goals and says which were met. Run from the repository root::

    python tests/benchmarks/bench_self_consistency.py            # (a), (b), (c); 15 min each
    python tests/benchmarks/bench_self_consistency.py --quick    # (a) only, 4 min, smaller population
    python tests/benchmarks/bench_self_consistency.py --cases a --time-limit 900 --json

Any option of the example is accepted. Exit status 0 when every goal of the
cases run was met, 1 otherwise (the table is printed either way).

Goals: (a) ≥ 98 % of atoms within 0.5 Å in ≤ 15 min (900 s of wall time for the
refinement, setup included; the example gives the GA 890 s by default);
(b) ≥ 4 of the 6 moved atoms found (partner within 0.5 Å); (c) ≥ 80 % within 0.5 Å.
Case (g), the melt of (c) quenched into a glass (``--cases a,b,c,g``), has no
goal: it is reported to show where the search stops working.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

GOALS = {
    "a": ("≥ 98 % within 0.5 Å in ≤ 900 s", lambda r: r["within_0.5"] >= 0.98 and r["wall_time_s"] <= 900.0),
    "b": ("≥ 4 of 6 moved atoms found", lambda r: r.get("moved_found", 0) >= 4),
    "c": ("≥ 80 % within 0.5 Å", lambda r: r["within_0.5"] >= 0.80),
    "g": ("none (reported)", None),
}


def main(argv=None) -> int:
    import self_consistency

    report = self_consistency.main(argv)
    ok = True
    print("goals:")
    for row in report["cases"]:
        key = row["case"][1]
        text, check = GOALS[key]
        if check is None:
            print(f"  {row['case']:18s} {text:34s} -")
            continue
        met = bool(check(row))
        ok &= met
        print(f"  {row['case']:18s} {text:34s} {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
