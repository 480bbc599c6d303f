"""
### LLM-as-a-judge: an offline evaluation on the Gemini flex tier

Candidate answers (a JSONL file shipped beside this file: question, reference,
candidate) are each judged by one mapped, deferrable
`GeminiFlexGenerateContentOperator` task with structured output (a 1-5 score, a
verdict, a one-sentence reason). An aggregation task writes the score table to
SQL and logs the mean score, the pass rate and the flex cost.

- **Deferrable**: while a judge call waits in the flex queue (up to 15 minutes),
  the triggerer holds it; no worker slot is used.
- **Pool** `gemini_flex`: caps how many judge calls run at once. Create it with
  deferred tasks counted, or deferred calls escape the cap:
  `airflow pools set gemini_flex 4 "Gemini flex calls" --include-deferred`.
  (`airflow dags test` ignores pools.)
- Params: `model`, `gemini_flex_conn_id`, `sql_conn_id`, `pass_score`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_flex.operators.gemini_flex import GeminiFlexGenerateContentOperator

CANDIDATES = Path(__file__).parent / "data" / "eval_candidates.jsonl"
JUDGE_POOL = "gemini_flex"
TABLE = "judge_scores"
RUBRIC = (
    "You are a strict grader. Compare the candidate answer with the reference answer. "
    "Score 5 for fully correct and complete, 1 for wrong or harmful; verdict 'pass' only if the "
    "candidate is correct. Give a one-sentence reason."
)
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
        "reason": {"type": "string", "maxLength": 300},
    },
    "required": ["score", "verdict", "reason"],
}

with DAG(
    dag_id="flex_llm_judge_eval",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "eval"],
    params={
        "model": Param("gemini-2.5-flash", type="string", description="The judge model"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
        "sql_conn_id": Param("flex_demo_sqlite", type="string", description="Any common.sql DB-API connection"),
        "pass_score": Param(4, type="integer", minimum=1, maximum=5, description="Scores at or above this pass"),
    },
):

    @task
    def load_candidates() -> list[dict]:
        """Read the eval set; a production DAG would read this run's model outputs."""
        lines = CANDIDATES.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    @task
    def judge_prompts(candidates: list[dict]) -> list[str]:
        """One judging prompt per candidate, in the candidates' order."""
        return [
            f"Question: {c['question']}\nReference answer: {c['reference']}\nCandidate answer: {c['candidate']}"
            for c in candidates
        ]

    candidates = load_candidates()
    # Expanded values come from XCom and are not rendered as templates, so braces in answers are safe.
    judge = GeminiFlexGenerateContentOperator.partial(
        task_id="judge",
        pool=JUDGE_POOL,
        deferrable=True,
        model="{{ params.model }}",
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
        system_instruction=RUBRIC,
        response_schema=VERDICT_SCHEMA,
    ).expand(contents=judge_prompts(candidates))

    @task
    def score_table(candidates: list[dict], verdicts: list[dict], **context) -> dict:
        """Write one row per candidate to the score table; log mean score, pass rate and cost."""
        from airflow_provider_flex.compat import BaseHook

        verdicts = list(verdicts)  # mapped results, in map-index order
        if len(verdicts) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(verdicts)} judge results")
        params, run_id = context["params"], context["run_id"]
        rows = []
        for candidate, result in zip(candidates, verdicts, strict=True):
            verdict = result["parsed"]
            passed = verdict["score"] >= params["pass_score"]
            rows.append(
                (
                    run_id,
                    candidate["id"],
                    verdict["score"],
                    "pass" if passed else "fail",
                    verdict["reason"],
                    result["service_tier"],
                    result["cost_usd"],
                )
            )
        hook = BaseHook.get_connection(params["sql_conn_id"]).get_hook()
        hook.run(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (run_id TEXT, candidate_id TEXT, score INTEGER, verdict TEXT, "
            "reason TEXT, service_tier TEXT, cost_usd REAL, PRIMARY KEY (run_id, candidate_id))"
        )
        hook.insert_rows(
            TABLE,
            rows,
            target_fields=["run_id", "candidate_id", "score", "verdict", "reason", "service_tier", "cost_usd"],
            replace=True,
            replace_index=["run_id", "candidate_id"],
        )
        scores = [row[2] for row in rows]
        summary = {
            "judged": len(rows),
            "mean_score": round(sum(scores) / len(scores), 3),
            "pass_rate": round(sum(row[3] == "pass" for row in rows) / len(rows), 3),
            "cost_usd": round(sum(row[6] or 0 for row in rows), 6),
        }
        print(
            f"Judged {summary['judged']} candidates: mean score {summary['mean_score']}, "
            f"pass rate {summary['pass_rate']:.0%}, flex cost ${summary['cost_usd']:.6f}; table {TABLE}."
        )
        return summary

    score_table(candidates, judge.output)
