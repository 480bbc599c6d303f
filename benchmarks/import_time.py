"""What a DAG file pays at parse time for this provider: each operator's import on top of airflow.sdk.

Each import runs in a fresh interpreter with ``-X importtime``; the figure is the sum of every module
imported after ``airflow.sdk``, the median of ``--runs`` (the machines are shared and noisy).

    .venv/bin/python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

IMPORTS = {
    "GeminiFlexGenerateContentOperator": "from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator",
    "GeminiFlexStreamContentOperator": "from airflow_provider_flex.operators.gemini_flex import GeminiFlexStreamContentOperator",
    "GeminiFlexEnrichOperator": "from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator",
    "@task.gemini_flex": "from airflow_provider_flex.decorators.gemini_flex import gemini_flex_task",
    "GeminiFlexHook (for comparison: not needed to parse a DAG)": "from airflow_provider_flex.hooks.gemini_flex import GeminiFlexHook",
}


def import_ms(statement: str) -> float:
    """Milliseconds of imports after airflow.sdk for ``statement``, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import airflow.sdk; {statement}"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.splitlines()
    after = max(i for i, line in enumerate(out) if line.rstrip().endswith("| airflow.sdk"))
    return sum(int(line.split("|")[0].split(":")[1]) for line in out[after + 1 :]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for name, statement in IMPORTS.items():
        runs = [import_ms(statement) for _ in range(args.runs)]
        print(f"{name:<60} median {statistics.median(runs):6.1f} ms  (min {min(runs):.1f}, max {max(runs):.1f})")


if __name__ == "__main__":
    main()
