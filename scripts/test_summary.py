"""One closing line for `make test`'s pytest groups (main, side, each matrix leg): their counts added up ("N passed, N failed")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped)")


def main(logs: list[str]) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for log in logs:
        text = Path(log).read_text(errors="replace").splitlines()
        lines = [line for line in text if " in " in line and re.search(r"\d+ (passed|failed|error|skipped)", line)]
        for number, word in COUNT.findall(lines[-1] if lines else ""):
            key = "failed" if word.startswith("error") else word
            totals[key] += int(number)
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
