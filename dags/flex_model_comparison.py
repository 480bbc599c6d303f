"""
### Compare models with a judge, on the Gemini flex tier

Each candidate model answers the same questions (one enrichment per model, mapped over the models), a
judge model scores every answer against the reference (one enrichment over all answers, with a pydantic
verdict as the schema), and a report task writes the mean score per model, a per-item table (CSV) and,
when matplotlib is installed (the `report` extra), a bar chart as PNG.

- **Every answer judged once**: the judge's rows are keyed `model:question`; a rerun of the DAG run
  resumes without paying twice, and a rerun after a changed judge model or rubric refuses before any
  call (`on_changed_request`), so stale judgments are never reported as new.
- **Every paid answer counted**: answers that break the verdict schema are dead letters whose cost is in
  the summary and the spend view; the report counts them per model as unjudged.
- Params: `candidates` (the models compared), `judge_model`, `gemini_flex_conn_id`.
- Output under the `flex_output_root` Variable (default `/tmp/airflow-flex`): `model_comparison/<run>/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task
from pydantic import BaseModel, Field

from airflow_provider_flex.operators.gemini_flex import GeminiFlexEnrichOperator

QUESTIONS = Path(__file__).parent / "data" / "eval_candidates.jsonl"
RUBRIC = (
    "You are a strict grader. Compare the answer with the reference answer. Score 5 for fully correct and "
    "complete, 1 for wrong or harmful. Give a one-sentence reason."
)


class Verdict(BaseModel):
    """What the judge returns for one answer."""

    score: int = Field(ge=1, le=5)
    reason: str


with DAG(
    dag_id="flex_model_comparison",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["gemini", "flex", "eval"],
    params={
        "candidates": Param(
            ["gemini-2.5-flash-lite", "gemini-2.5-flash"], type="array", description="The models compared"
        ),
        "judge_model": Param("gemini-2.5-pro", type="string", description="The model that scores the answers"),
        "gemini_flex_conn_id": Param("gemini_flex_default", type="string"),
    },
):

    @task
    def plan(**context) -> list[dict]:
        """One answering enrichment per candidate model: its model and its own output folder."""
        from airflow.sdk import Variable

        root = f"{Variable.get('flex_output_root', '/tmp/airflow-flex')}/model_comparison/{context['run_id']}"
        return [{"model": model, "output_path": f"{root}/answers/{model}"} for model in context["params"]["candidates"]]

    @task
    def questions() -> list[dict]:
        """The eval set: id, question, reference answer (a production DAG would read its own)."""
        rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [{"id": row["id"], "question": row["question"], "reference": row["reference"]} for row in rows]

    asked = questions()
    answers = GeminiFlexEnrichOperator.partial(
        task_id="answer",
        records=asked,
        key_field="id",
        prompt_template="Answer in one or two sentences: {{ row.question }}",
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
    ).expand_kwargs(plan())

    @task
    def to_judge(summaries: list[dict], questions: list[dict]) -> list[dict]:
        """Every candidate's answer beside its question and reference, keyed ``model:question``."""
        from airflow_provider_flex.enrichment.store import read_results

        by_id = {row["id"]: row for row in questions}
        pairs = []
        for summary in summaries:
            for result in read_results(summary["output_path"]):
                question = by_id[result["key"]]
                pairs.append({**question, "key": f"{result['model']}:{result['key']}", "answer": result["text"]})
        return pairs

    judged = GeminiFlexEnrichOperator(
        task_id="judge",
        records=to_judge(answers.output, asked),
        key_field="key",
        prompt_template=(
            "Question: {{ row.question }}\nReference answer: {{ row.reference }}\nAnswer: {{ row.answer }}"
        ),
        model="{{ params.judge_model }}",
        system_instruction=RUBRIC,
        response_schema=Verdict,
        output_path="{{ var.value.get('flex_output_root', '/tmp/airflow-flex') }}/model_comparison/{{ run_id }}/judge",
        max_failed_fraction=0.2,
        gemini_flex_conn_id="{{ params.gemini_flex_conn_id }}",
    )

    @task
    def report(summary: dict, **context) -> dict:
        """Mean score per model, a per-item table (CSV) and, with matplotlib, a chart (PNG)."""
        import csv

        from airflow_provider_flex.enrichment.store import read_results

        rows = read_results(summary["output_path"], include_failed=True)
        folder = Path(summary["output_path"]).parent
        table, scores = [], {}
        for row in rows:
            model, question_id = row["key"].split(":", 1)
            score = row["parsed"]["score"] if row["status"] == "ok" else None
            scores.setdefault(model, []).append(score)
            table.append({"model": model, "question": question_id, "score": score, "status": row["status"]})
        with (folder / "scores.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["model", "question", "score", "status"])
            writer.writeheader()
            writer.writerows(sorted(table, key=lambda item: (item["model"], item["question"])))
        means = {
            model: round(sum(s for s in got if s is not None) / max(1, sum(s is not None for s in got)), 3)
            for model, got in sorted(scores.items())
        }
        chart = _chart(means, folder / "scores.png")
        for model, mean in means.items():
            unjudged = sum(s is None for s in scores[model])
            print(f"{model}: mean score {mean} over {len(scores[model]) - unjudged} answers ({unjudged} unjudged)")
        return {
            "mean_score": means,
            "items": len(table),
            "table": str(folder / "scores.csv"),
            "chart": chart,
            "judge_cost_usd": summary["cost_usd"],
        }

    def _chart(means: dict[str, float], path: Path) -> str | None:
        """Draw the mean scores as a bar chart when matplotlib is installed; its path, else None."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot
        except ImportError:
            print("matplotlib is not installed (the report extra): no chart")
            return None
        figure, axes = pyplot.subplots(figsize=(6, 3))
        axes.bar(list(means), list(means.values()), color="#4285f4")
        axes.set_ylim(0, 5)
        axes.set_ylabel("mean judge score (1-5)")
        figure.tight_layout()
        figure.savefig(path)
        pyplot.close(figure)
        return str(path)

    report(judged.output)
