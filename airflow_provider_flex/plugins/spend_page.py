"""The spend page's HTML: a pure function of the figures, rendered on the server (no script).

The chart is an inline SVG: per day, what flex (and batch) calls cost beside what the same tokens
cost at standard price. The table lists every run with its figures and a link to the run in
Airflow's UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

CHART_HEIGHT = 160
BAR_WIDTH = 18

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Flex spend{% if dag_id %}: {{ dag_id }}{% endif %}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
 h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
 .totals { margin: .5rem 0 1rem; }
 .totals b { font-size: 1.1rem; }
 table { border-collapse: collapse; font-size: .85rem; }
 th, td { border-bottom: 1px solid #d9e2ec; padding: .3rem .6rem; text-align: right; }
 th:first-child, td:first-child, th:nth-child(2), td:nth-child(2), td.state { text-align: left; }
 tr.failed td.state { color: #b42318; font-weight: 600; }
 .legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem; }
 svg text { font-size: 10px; fill: #52606d; }
</style>
</head>
<body>
<h1>Gemini Flex spend{% if dag_id %} for {{ dag_id }}{% endif %}{% if run_id %}, run {{ run_id }}{% endif %}</h1>
{% if not runs %}
<p id="empty">No DAG run you may read has used the Gemini Flex provider yet.</p>
{% else %}
<p class="totals">{{ runs|length }} runs: spent <b id="total-cost">${{ "%.6f"|format(total_cost) }}</b>
 against <b id="total-standard">${{ "%.6f"|format(total_standard) }}</b> at standard price,
 saved <b id="total-saved">${{ "%.6f"|format(total_standard - total_cost) }}</b>.</p>
<div class="legend"><span style="background:#1a73e8"></span>flex and batch spend
<span style="background:#c1d7f5"></span>the same tokens at standard price</div>
<svg id="spend-chart" role="img" aria-label="Spend per day" width="{{ chart_width }}" height="{{ chart_height + 40 }}">
{% for bar in bars %}
 <g class="day" data-day="{{ bar.day }}" data-cost-usd="{{ bar.cost_usd }}" data-standard-cost-usd="{{ bar.standard_cost_usd }}">
  <rect class="standard" x="{{ bar.x }}" y="{{ bar.standard_y }}" width="{{ bar_width }}" height="{{ bar.standard_h }}" fill="#c1d7f5"><title>{{ bar.day }}: ${{ bar.standard_cost_usd }} at standard price</title></rect>
  <rect class="flex" x="{{ bar.x + bar_width }}" y="{{ bar.cost_y }}" width="{{ bar_width }}" height="{{ bar.cost_h }}" fill="#1a73e8"><title>{{ bar.day }}: ${{ bar.cost_usd }} spent</title></rect>
  <text x="{{ bar.x }}" y="{{ chart_height + 14 }}">{{ bar.day }}</text>
 </g>
{% endfor %}
</svg>
<table id="runs">
<thead><tr><th>DAG</th><th>run</th><th>state</th><th>tasks</th><th title="API requests (retries included) and batch jobs">calls</th><th>rows</th><th>cost (USD)</th>
<th>standard (USD)</th><th>saved (USD)</th><th>by route (USD)</th><th>by tier (USD)</th><th>input tokens</th><th>cached tokens</th>
<th title="cached tokens at the input price less the cached price">cache saved (USD)</th><th>cache storage (USD)</th><th>output tokens</th><th>tiers</th><th>429</th><th>503</th>
<th title="state and the API's batchStats: successful / failed / pending requests">batch jobs</th></tr></thead>
<tbody>
{% for run in runs %}
<tr class="run {{ run.state or '' }}" data-dag-id="{{ run.dag_id }}" data-run-id="{{ run.run_id }}">
 <td>{{ run.dag_id }}</td>
 <td><a class="run-link" target="_top" href="{{ ui_root }}/dags/{{ run.dag_id|urlencode }}/runs/{{ run.run_id|urlencode }}">{{ run.run_id }}</a></td>
 <td class="state">{{ run.state }}</td><td>{{ run.tasks }}</td><td class="calls">{{ run.calls }}</td><td>{{ run.rows }}</td>
 <td class="cost">{{ "%.6f"|format(run.cost_usd) }}</td><td class="standard">{{ "%.6f"|format(run.standard_cost_usd) }}</td>
 <td class="saved">{{ "%.6f"|format(run.saved_usd) }}</td>
 <td class="by-route">{% for route, cost in run.cost_by_route|dictsort %}{{ route }} {{ "%.6f"|format(cost) }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
 <td class="by-tier">{% for tier, cost in run.cost_by_tier|dictsort %}{{ tier }} {{ "%.6f"|format(cost) }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
 <td>{{ run.input_tokens }}</td><td class="cached">{{ run.cached_tokens }}</td>
 <td class="cache-saved">{{ "%.6f"|format(run.cache_saved_usd) }}</td><td class="cache-storage">{{ "%.6f"|format(run.cache_storage_usd) }}</td>
 <td>{{ run.output_tokens }}</td>
 <td>{% for tier, count in run.tiers|dictsort %}{{ tier }} {{ count }}{% if not loop.last %}, {% endif %}{% endfor %}</td>
 <td>{{ run.rate_limited_429 }}</td><td>{{ run.unavailable_503 }}</td>
 <td class="jobs">{% for job in run.jobs %}<span class="job {{ job.state }}" title="{{ job.name }}">{{ job.state }}{% if job.successful is defined %} {{ job.successful }}/{{ job.failed }}/{{ job.pending }}{% endif %}</span>{% if not loop.last %}, {% endif %}{% endfor %}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% endif %}
</body>
</html>
"""
#: Compiled once, when the api-server first serves the page (``from_string`` does not cache).
_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(_TEMPLATE)


def chart_bars(days: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return bar geometry per day: the standard-price bar and the spend bar, scaled to the highest."""
    top = max((day["standard_cost_usd"] for day in days), default=0.0) or max(
        (day["cost_usd"] for day in days), default=0.0
    )
    bars = []
    for position, day in enumerate(days):
        standard_h = round(CHART_HEIGHT * day["standard_cost_usd"] / top, 1) if top else 0.0
        cost_h = round(CHART_HEIGHT * day["cost_usd"] / top, 1) if top else 0.0
        bars.append(
            {
                **day,
                "x": 10 + position * (3 * BAR_WIDTH + 20),
                "standard_h": standard_h,
                "standard_y": round(CHART_HEIGHT - standard_h, 1),
                "cost_h": cost_h,
                "cost_y": round(CHART_HEIGHT - cost_h, 1),
            }
        )
    return bars


def render_spend_page(
    runs: Sequence[Mapping[str, Any]],
    days: Sequence[Mapping[str, Any]],
    *,
    ui_root: str = "",
    dag_id: str | None = None,
    run_id: str | None = None,
) -> str:
    bars = chart_bars(days)
    return _PAGE.render(
        runs=runs,
        bars=bars,
        bar_width=BAR_WIDTH,
        chart_height=CHART_HEIGHT,
        chart_width=max(300, 20 + len(bars) * (3 * BAR_WIDTH + 20)),
        total_cost=sum(run["cost_usd"] for run in runs),
        total_standard=sum(run["standard_cost_usd"] for run in runs),
        ui_root=ui_root,
        dag_id=dag_id,
        run_id=run_id,
    )
