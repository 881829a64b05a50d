"""Write detectors/calibration_table.json: the shipped alarm thresholds, simulated by the code as it is now.

    python scripts/calibration_table.py                  # re-simulate what the table's code no longer matches
    python scripts/calibration_table.py --add DIR ...    # also the parameter sets cached in DIR (a threshold cache)
    python scripts/calibration_table.py --check          # re-simulate every entry; fail on any difference

`make calibration-table` runs the first form.  After an edit to the simulation's code (detectors/calibration.py,
cusum_bank.py, distribution.py) the table no longer matches it, is ignored, and a unit test says to run this.
To ship a new parameter set, run what asks for it with DRIFTLINE_CALIBRATION_DIR (or the unit tier, whose
session directory pytest prints on failure) and pass that directory to --add.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from detectors import calibration


def _keys_cached_in(directory: Path) -> set[str]:
    keys = set()
    for path in directory.glob("*.json"):
        try:
            keys.add(str(json.loads(path.read_text())["key"]))
        except (OSError, ValueError, KeyError, TypeError):
            print(f"skipped {path}: not a threshold file", file=sys.stderr)
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add", type=Path, nargs="*", default=[], help="threshold cache directories to take sets from")
    parser.add_argument("--check", action="store_true", help="re-simulate every entry and compare, write nothing")
    args = parser.parse_args()

    fingerprint = calibration.simulation_fingerprint()
    try:
        table = json.loads(calibration.TABLE.read_text())
    except FileNotFoundError:
        table = {"simulation": None, "thresholds": {}}
    current = table["simulation"] == fingerprint
    if args.check and not current:
        print(f"the table was simulated by other code ({table['simulation']}, now {fingerprint})")
        return 1
    keys = set(table["thresholds"]) | set().union(*(_keys_cached_in(d) for d in args.add))
    reused = {} if args.check or not current else {k: v for k, v in table["thresholds"].items() if k in keys}
    todo = sorted(keys - set(reused))
    print(f"{len(keys)} sets: {len(reused)} current, {len(todo)} to simulate on {os.cpu_count()} processes")
    started = time.monotonic()
    with ProcessPoolExecutor() as pool:
        simulated = dict(zip(todo, pool.map(calibration.simulate_key, todo), strict=True))
    print(f"simulated in {time.monotonic() - started:.0f} s")

    if args.check:
        wrong = {k: (table["thresholds"][k], v) for k, v in simulated.items() if v != table["thresholds"][k]}
        for key, (shipped, now) in wrong.items():
            print(f"{key}: shipped {shipped!r}, simulated {now!r}")
        print(f"{len(wrong)} of {len(simulated)} differ")
        return 1 if wrong else 0
    thresholds = dict(sorted({**reused, **simulated}.items()))
    calibration.TABLE.write_text(json.dumps({"simulation": fingerprint, "thresholds": thresholds}, indent=1) + "\n")
    print(f"wrote {len(thresholds)} thresholds to {calibration.TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
