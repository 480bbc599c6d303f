"""The flex spend view on a real api-server, with real users and passwords (not the all-admins mode).

Two example DAGs (product enrichment, stream digest) and the tests' own spend cases run on the
deployment; the view's figures are checked against the provider tasks' XCom values read straight
from the metadata database, and the page is driven in a real headless browser (Debian's chromium).
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.integration.conftest import API_KEY, PASSWORDS
from tests.integration.one_dag_auth_manager import JUDGE_DAG, JUDGE_ONLY_USER

pytestmark = pytest.mark.slow

PROVIDER_OPERATORS = {
    "GeminiFlexGenerateContentOperator",
    "GeminiFlexStreamContentOperator",
    "GeminiFlexEnrichOperator",
    "_GeminiFlexDecoratedOperator",
}
DAGS = (
    "flex_product_enrichment",
    "flex_stream_digest",
    "flex_partial_spend",
    "flex_no_provider",
    "flex_failed_before_call",
    "flex_cached_run",
    JUDGE_DAG,
)
FAILING = ("flex_partial_spend", "flex_failed_before_call")
#: The logical date of the runs the spend view is checked on: not a day the scheduler runs here.
SPEND_DAY = "2026-01-02T00:00:00+00:00"


@pytest.fixture(scope="module")
def spend_runs(airflow) -> dict[str, str]:
    """One run of each DAG, run side by side: {dag_id: run_id}. Each runs on a day of its own: unpausing a daily
    DAG starts its scheduled run for today too, and flex_product_enrichment's output folder is its day's, so a
    run of today would find the rows that run answered and (rightly) pay nothing."""
    runs = {dag_id: airflow.trigger(dag_id, logical_date=SPEND_DAY) for dag_id in DAGS}
    for dag_id, run_id in runs.items():
        expected = "failed" if dag_id in FAILING else "success"
        assert airflow.wait_for_run(dag_id, run_id, timeout=500) == expected, dag_id
    return runs


def token(airflow, user: str) -> str:
    answer = httpx.post(
        f"{airflow.api_url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["access_token"]


def get(airflow, path: str, user: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(airflow, user)}"} if user else {}
    return httpx.get(f"{airflow.api_url}{path}", headers=headers, timeout=60, **kwargs)


def recorded_spend(airflow, dag_id: str, run_id: str) -> dict[str, float]:
    """Cost and standard cost of the run's provider tasks, straight from the XCom table (no provider code)."""
    rows = airflow.query(
        "SELECT x.task_id, x.map_index, x.key, x.value, ti.operator FROM xcom x JOIN task_instance ti "
        "ON ti.dag_id = x.dag_id AND ti.run_id = x.run_id AND ti.task_id = x.task_id AND ti.map_index = x.map_index "
        "WHERE x.dag_id = ? AND x.run_id = ? AND x.key IN ('return_value', 'gemini_flex_spend')",
        dag_id,
        run_id,
    )
    chosen: dict[tuple, dict] = {}
    for task_id, map_index, key, value, operator in rows:
        if operator not in PROVIDER_OPERATORS:
            continue
        parsed = json.loads(value)
        parsed = json.loads(parsed) if isinstance(parsed, str) else parsed
        if (task_id, map_index) not in chosen or key == "return_value":
            chosen[(task_id, map_index)] = parsed
    return {
        "tasks": len(chosen),
        "cost_usd": round(sum(value["cost_usd"] for value in chosen.values()), 6),
        "standard_cost_usd": round(sum(value["standard_cost_usd"] for value in chosen.values()), 6),
    }


def test_only_signed_in_users_see_the_view(airflow, spend_runs):
    for path in ("/flex/api/runs", "/flex/spend"):
        assert get(airflow, path).status_code == 401
        as_api = httpx.get(f"{airflow.api_url}{path}", headers={"Accept": "application/json"}, timeout=60)
        assert as_api.status_code == 401
        forged = httpx.get(f"{airflow.api_url}{path}", headers={"Authorization": "Bearer not-a-token"}, timeout=60)
        assert forged.status_code in (401, 403)


def test_runs_json_counts_each_provider_task_once(airflow, spend_runs):
    runs = get(airflow, "/flex/api/runs", "alice").json()
    mine = {run["dag_id"]: run for run in runs if run["run_id"] in spend_runs.values()}
    assert "flex_no_provider" not in mine
    assert set(mine) == set(DAGS) - {"flex_no_provider"}
    zero = mine.pop("flex_failed_before_call")
    assert zero["state"] == "failed" and zero["tasks"] == 1 and zero["cost_usd"] == 0.0 and zero["calls"] == 0
    for dag_id, run in mine.items():
        recorded = recorded_spend(airflow, dag_id, spend_runs[dag_id])
        assert run["tasks"] == recorded["tasks"] > 0, dag_id
        assert run["cost_usd"] == pytest.approx(recorded["cost_usd"], abs=1e-6), dag_id
        assert run["standard_cost_usd"] == pytest.approx(recorded["standard_cost_usd"], abs=1e-6), dag_id
        assert 0 < run["cost_usd"] < run["standard_cost_usd"], dag_id
        assert run["input_tokens"] > 0 and run["output_tokens"] > 0, dag_id
        assert run["tiers"], dag_id
    cached = mine["flex_cached_run"]
    assert cached["cached_tokens"] >= 12 * 2100 and cached["cache_saved_usd"] > 0 and cached["cache_storage_usd"] > 0
    assert cached["calls"] >= cached["rows"] == 12 and cached["cost_by_route"]["flex"] == pytest.approx(
        cached["cost_usd"], abs=1e-6
    )
    assert cached["cost_by_tier"] == {"flex": pytest.approx(cached["cost_usd"] - cached["cache_storage_usd"], abs=1e-6)}
    partial = mine["flex_partial_spend"]
    assert partial["state"] == "failed"
    assert partial["tasks"] == 2  # the enrichment and the @task.gemini_flex call; not the report repeating them
    assert partial["rows"] == 6
    starts = [run["start_date"] for run in runs]
    assert starts == sorted(starts, reverse=True)  # newest first
    only = get(airflow, "/flex/api/runs", "alice", params={"dag_id": "flex_stream_digest"}).json()
    assert {run["dag_id"] for run in only} == {"flex_stream_digest"}


def test_a_user_sees_only_the_dags_they_may_read(airflow, spend_runs):
    runs = get(airflow, "/flex/api/runs", JUDGE_ONLY_USER).json()
    assert runs and {run["dag_id"] for run in runs} == {JUDGE_DAG}
    page = get(airflow, "/flex/spend", JUDGE_ONLY_USER).text
    assert JUDGE_DAG in page and "flex_product_enrichment" not in page
    assert get(airflow, "/flex/api/runs", JUDGE_ONLY_USER, params={"dag_id": "flex_product_enrichment"}).json() == []


def test_the_page_opens_with_the_uis_cookie_and_holds_the_figures(airflow, spend_runs):
    cookie = {"_token": token(airflow, "alice")}
    page = httpx.get(f"{airflow.api_url}/flex/spend", cookies=cookie, timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for dag_id in set(DAGS) - {"flex_no_provider"}:
        assert dag_id in page.text
    assert "flex_no_provider" not in page.text
    run = next(r for r in get(airflow, "/flex/api/runs", "alice").json() if r["dag_id"] == "flex_stream_digest")
    assert f"{run['cost_usd']:.6f}" in page.text
    assert 'href="/dags/flex_stream_digest/runs/' in page.text
    assert API_KEY not in page.text
    assert API_KEY not in get(airflow, "/flex/api/runs", "alice").text


def test_the_plugin_is_listed_with_its_views(airflow):
    plugins = get(airflow, "/api/v2/plugins", "admin").json()["plugins"]
    (ours,) = [plugin for plugin in plugins if plugin["name"] == "gemini_flex"]
    assert {"url_prefix": "/flex"}.items() <= ours["fastapi_apps"][0].items()
    destinations = {view["destination"]: view for view in ours["external_views"]}
    assert destinations["nav"]["href"] == "/flex/spend"
    assert destinations["dag_run"]["href"].startswith("/flex/spend?dag_id={DAG_ID}")
    # the UI makes a run's tab only for a view with a url_route
    assert destinations["dag_run"]["url_route"] == "flex-spend-run" and destinations["nav"]["url_route"]
    assert get(airflow, "/api/v2/plugins/importErrors", "admin").json()["total_entries"] == 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="make test installs Debian's chromium")
def test_the_page_in_a_real_browser(airflow, spend_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    runs = {(run["dag_id"], run["run_id"]): run for run in get(airflow, "/flex/api/runs", "alice").json()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "_token", "value": token(airflow, "alice"), "url": airflow.api_url}])
            page = context.new_page()
            page.goto(f"{airflow.api_url}/flex/spend")
            bars = page.locator("#spend-chart rect.flex")
            assert bars.count() >= 1
            assert float(bars.first.get_attribute("height")) > 0  # the chart is drawn
            box = page.locator("#spend-chart").bounding_box()
            assert box is not None and box["height"] > 100
            page.screenshot(path=str(tmp_path / "spend.png"), full_page=True)
            rows = page.locator("tr.run")
            assert rows.count() == len(runs)
            for index in range(rows.count()):
                row = rows.nth(index)
                run = runs[(row.get_attribute("data-dag-id"), row.get_attribute("data-run-id"))]
                assert float(row.locator("td.cost").inner_text()) == pytest.approx(run["cost_usd"], abs=1e-6)
                assert float(row.locator("td.standard").inner_text()) == pytest.approx(
                    run["standard_cost_usd"], abs=1e-6
                )
            target = spend_runs["flex_stream_digest"]
            page.locator(f'tr.run[data-dag-id="flex_stream_digest"][data-run-id="{target}"] a.run-link').click()
            page.wait_for_url("**/dags/flex_stream_digest/runs/**")
            assert "flex_stream_digest" in page.url
            page.wait_for_load_state("networkidle")
            assert page.title()  # Airflow's UI answered the run's page
            # the run's own "Flex spend" tab: the view inside Airflow's page, for this run only
            tab = page.locator('a[href$="plugin/flex-spend-run"]')
            tab.first.wait_for(timeout=60_000)
            tab.first.click()
            page.wait_for_url("**/plugin/flex-spend-run")
            frame = page.frame_locator("iframe")
            row = frame.locator(f'tr.run[data-dag-id="flex_stream_digest"][data-run-id="{target}"]')
            row.wait_for(timeout=60_000)
            assert frame.locator("tr.run").count() == 1
            cost = runs[("flex_stream_digest", target)]["cost_usd"]
            assert float(row.locator("td.cost").inner_text()) == pytest.approx(cost, abs=1e-6)
            page.screenshot(path=str(tmp_path / "run-tab.png"), full_page=True)

            # a browser that is not signed in goes to Airflow's login page, and comes back after it
            stranger = browser.new_context().new_page()
            stranger.goto(f"{airflow.api_url}/flex/spend")
            stranger.wait_for_url("**/login**")
            assert "next=" in stranger.url and "flex%2Fspend" in stranger.url
        finally:
            browser.close()
    assert (tmp_path / "spend.png").stat().st_size > 10_000
