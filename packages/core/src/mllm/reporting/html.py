"""report.html: one self-contained page to read a run by (no network needed to open it).

Sections: with ``findings:`` in the pipeline, each claim with its arms' mean, std and n,
the difference, its standard error and the verdict, beside the rule that gave it; with
``seeds:``/``sweep:``, each arm's metrics over its seeds (mean ± std, n) and a bar chart of
the headline metric with the standard deviation as whiskers; the metrics side by side (a
table per benchmark, one row per model), a bar chart per benchmark of its headline metric
per model, the training curves (loss; reward margins and accuracies
for preference stages), and an answer browser per benchmark: each item's image (a small
embedded thumbnail), question, gold answer and every model's answer, wrong answers
marked, with a filter to the items where the models disagree or one is wrong and a text
search. The page is plain HTML that reads without JavaScript; the script only filters.
Opening it as ``report.html#filter=disagree`` (or ``wrong``, or ``wrong:<model>``)
starts filtered.

An answer is *wrong* here when, lowercased without punctuation, it differs from the gold
answer: a quick look, not the benchmark's metric (which may map answers first, as POPE's
yes/no rule does).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from mllm.records import IMAGE_TOKEN
from mllm.reporting.sources import PREFERENCE_KEYS, BenchmarkAnswers, collect_answers, train_log
from mllm.reporting.svg import bar_chart, line_chart
from mllm.reporting.thumbnails import Thumbnails

REPORT_HTML = "report.html"
DEFAULT_MAX_ITEMS = 200

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2f4a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header nav a{color:#cfe0ff;margin-right:16px;text-decoration:none}
main{padding:8px 24px 40px;max-width:1400px}h2{margin-top:28px;border-bottom:2px solid #d5dbe5;padding-bottom:4px}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px}th,td{border:1px solid #d5dbe5;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.headline{font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #d5dbe5}
.chart .title{font-weight:600;font-size:13px}.chart .tick,.chart .axis-label,.chart .legend,.chart .value{font-size:11px}
.chart .grid{stroke:#e3e7ee}.answers td.q{white-space:pre-wrap;max-width:380px}
.answers img{width:64px;height:64px;object-fit:contain;image-rendering:pixelated;background:#eee}
td.right{background:#eaf6ec}td.wrong{background:#fbe9e9}td.missing{color:#999}
td.verdict-holds{background:#eaf6ec;font-weight:600}td.verdict-does-not-hold{background:#fbe9e9;font-weight:600}
td.verdict-within-noise,td.verdict-too-few-seeds,td.verdict-not-measured{background:#f3f0e4}
.controls{margin:6px 0}.controls select,.controls input{margin-right:10px;padding:3px}.note{color:#5a6577}
"""

SCRIPT = """
(function () {
  function run(section) {
    var mode = section.querySelector("select.filter").value;
    var query = section.querySelector("input.search").value.trim().toLowerCase();
    var rows = section.querySelectorAll("tr.item"), shown = 0;
    rows.forEach(function (row) {
      var wrong = (row.dataset.wrong || "").split(" ").filter(Boolean);
      var ok = mode === "all" || (mode === "disagree" && row.dataset.disagree === "1") ||
               (mode === "wrong" && wrong.length > 0) ||
               (mode.indexOf("wrong:") === 0 && wrong.indexOf(mode.slice(6)) >= 0);
      if (ok && query) ok = row.textContent.toLowerCase().indexOf(query) >= 0;
      row.hidden = !ok;
      if (ok) shown++;
    });
    section.querySelector(".count").textContent = shown + " of " + rows.length + " items shown";
  }
  var sections = document.querySelectorAll("section.answers");
  var wanted = /filter=([^&]+)/.exec(location.hash);
  sections.forEach(function (section) {
    var select = section.querySelector("select.filter");
    if (wanted) {
      var value = decodeURIComponent(wanted[1]);
      if (Array.prototype.some.call(select.options, function (o) { return o.value === value; })) select.value = value;
    }
    select.addEventListener("change", function () { run(section); });
    section.querySelector("input.search").addEventListener("input", function () { run(section); });
    run(section);
  });
})();
"""


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


def headline_metric(metrics: list[str], declared: str | None) -> str | None:
    """The metric a benchmark is known by: its first declared ``metric_keys`` entry, else
    ``accuracy``, else its first metric."""
    if declared in metrics:
        return declared
    if "accuracy" in metrics:
        return "accuracy"
    return metrics[0] if metrics else None


def _metrics_section(report: dict[str, Any], headlines: dict[str, str]) -> list[str]:
    models = report["models"]
    out = ['<section id="metrics"><h2>Metrics</h2>']
    if not models:
        out.append('<p class="note">No eval stage wrote metrics.</p>')
    charts = []
    for benchmark in sorted({b for per_model in models.values() for b in per_model}):
        names = sorted({m for per_model in models.values() for m in per_model.get(benchmark, {})})
        headline = headline_metric(names, headlines.get(benchmark))
        out.append(f'<h3>{escape(benchmark)}</h3><table class="metrics" data-benchmark="{escape(benchmark)}">'
                   "<tr><th>model</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>")
        bars = []
        for model_id, per_model in models.items():
            if benchmark not in per_model:
                continue
            values = per_model[benchmark]
            cells = "".join(f'<td class="num{" headline" if n == headline else ""}">{_format(values.get(n, ""))}</td>'
                            for n in names)
            out.append(f"<tr><th>{escape(model_id)}</th>{cells}</tr>")
            value = values.get(headline)
            if isinstance(value, (int, float)) and math.isfinite(value):
                bars.append((model_id, float(value)))
        out.append("</table>")
        if bars and headline:
            charts.append(bar_chart(f"{benchmark}: {headline}", bars, y_label=headline))
    if charts:
        out.append('<h3>Headline metric per model</h3><div class="charts">' + "".join(charts) + "</div>")
    out.append("</section>")
    return out


def _mean_std(summary: dict[str, Any]) -> str:
    mean, std, n = summary.get("mean"), summary.get("std"), summary.get("n", 0)
    if not isinstance(mean, (int, float)):
        return "-"
    spread = f" ± {std:.4f}" if isinstance(std, (int, float)) else ""
    return f"{mean:.4f}{spread} (n={n})"


def _findings_section(findings: list[dict[str, Any]]) -> list[str]:
    """Each claim: its metric, the two arms (mean ± std, n), d, se and the verdict; the rule once."""
    if not findings:
        return []
    out = ['<section id="findings"><h2>Findings</h2>',
           '<table class="findings"><tr><th>claim</th><th>metric</th><th>direction</th><th>first arm</th>'
           "<th>second arm</th><th>d</th><th>se</th><th>verdict</th><th>paper</th></tr>"]
    rules = []
    for finding in findings:
        arms = list((finding.get("arms") or {}).items())
        cells = [f"<td>{escape(name)}: {escape(_mean_std(summary))}</td>" for name, summary in arms[:2]]
        cells += ["<td>-</td>"] * (2 - len(cells))
        verdict = str(finding.get("verdict", ""))
        numbers = "".join(f'<td class="num">{_format(finding[k]) if isinstance(finding.get(k), float) else "-"}</td>'
                          for k in ("difference", "se"))
        out.append(f"<tr><td>{escape(str(finding.get('claim', '')))}</td><td>{escape(str(finding.get('metric', '')))}"
                   f"</td><td>{escape(str(finding.get('direction', '')))}</td>{''.join(cells)}{numbers}"
                   f'<td class="verdict-{escape(verdict.replace(" ", "-"))}">{escape(verdict)}</td>'
                   f"<td>{escape(str(finding.get('paper', '')))}</td></tr>")
        if finding.get("rule") and finding["rule"] not in rules:
            rules.append(finding["rule"])
    out.append("</table>")
    out += [f'<p class="note">Rule: {escape(rule)}</p>' for rule in rules]
    out.append("</section>")
    return out


def _aggregate_section(aggregated: dict[str, Any], headlines: dict[str, str]) -> list[str]:
    """Per benchmark: one row per arm, each metric as mean ± std (n), and the headline's bars."""
    arms = (aggregated or {}).get("models") or {}
    if not arms:
        return []
    out = ['<section id="arms"><h2>Across seeds</h2>',
           '<p class="note">Each arm (a stage repeated over seeds or sweep variants) over its copies: mean ± '
           "sample standard deviation (n). One model per arm where the seeds do not repeat it.</p>"]
    charts = []
    for benchmark in sorted({b for per_arm in arms.values() for b in per_arm}):
        names = sorted({m for per_arm in arms.values() for m in per_arm.get(benchmark, {})})
        headline = headline_metric(names, headlines.get(benchmark))
        out.append(f'<h3>{escape(benchmark)}</h3><div style="overflow-x:auto"><table class="aggregate" '
                   f'data-benchmark="{escape(benchmark)}"><tr><th>arm</th>'
                   + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>")
        bars, errors = [], []
        for arm, per_arm in arms.items():
            values = per_arm.get(benchmark)
            if not values:
                continue
            cells = "".join(f'<td class="num{" headline" if n == headline else ""}">'
                            f"{escape(_mean_std(values.get(n) or {}))}</td>" for n in names)
            out.append(f"<tr><th>{escape(arm)}</th>{cells}</tr>")
            summary = values.get(headline) or {}
            if isinstance(summary.get("mean"), (int, float)) and math.isfinite(summary["mean"]):
                bars.append((arm, float(summary["mean"])))
                errors.append(summary.get("std") if isinstance(summary.get("std"), (int, float)) else None)
        out.append("</table></div>")
        if bars and headline:
            charts.append(bar_chart(f"{benchmark}: {headline} (mean ± std)", bars, y_label=headline, errors=errors))
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    out.append("</section>")
    return out


def _training_section(run_dir: Path, stage_ids: list[str], report: dict[str, Any]) -> list[str]:
    charts, last = [], report.get("training") or {}
    for stage_id in stage_ids:
        rows = train_log(run_dir / stage_id)
        losses = [r for r in rows if isinstance(r.get("loss"), (int, float))]
        if losses:
            charts.append(line_chart(f"{stage_id}: training loss", [("loss", [r["step"] for r in losses],
                                                                     [float(r["loss"]) for r in losses])],
                                     y_label="loss"))
        for key in PREFERENCE_KEYS:
            logged = [r for r in rows if isinstance(r.get(key), (int, float))]
            if logged:
                charts.append(line_chart(f"{stage_id}: {key.split('/')[-1].replace('margins', 'reward margin')}",
                                         [(key, [r["step"] for r in logged], [float(r[key]) for r in logged])],
                                         y_label=key))
    if not charts and not last:
        return []
    out = ['<section id="training"><h2>Training</h2>']
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    if last:
        keys = sorted({k for metrics in last.values() for k in metrics})
        out.append('<div style="overflow-x:auto"><table class="training"><tr><th>stage</th>' + "".join(f"<th>{escape(k)}</th>" for k in keys)
                   + "</tr>")
        for stage_id, metrics in last.items():
            out.append(f"<tr><th>{escape(stage_id)}</th>" + "".join(
                f'<td class="num">{_format(metrics.get(k, ""))}</td>' for k in keys) + "</tr>")
        out.append("</table></div>")
    out.append("</section>")
    return out


def _question(prompt: str) -> str:
    return "\n".join(line for line in prompt.replace(IMAGE_TOKEN, "").splitlines() if line.strip()).strip()


def _answers_section(benchmark: BenchmarkAnswers, thumbnails: Thumbnails, max_items: int) -> list[str]:
    items = list(benchmark.items.values())
    shown = items[:max_items]
    models = benchmark.models
    disagree = sum(item.disagree for item in items)
    wrong = ", ".join(f"{escape(m)} {sum(item.wrong(m) for item in items)}" for m in models)
    options = ['<option value="all">all items</option>', '<option value="disagree">models disagree</option>',
               '<option value="wrong">some model is wrong</option>']
    options += [f'<option value="wrong:{escape(m)}">{escape(m)} is wrong</option>' for m in models]
    out = [f'<section class="answers" data-benchmark="{escape(benchmark.name)}"><h3>{escape(benchmark.name)}</h3>',
           f'<p class="note">{len(items)} items; the models disagree on {disagree}; wrong answers: {wrong}.'
           + (f" The first {len(shown)} items are shown; every answer is in the eval stage's answers.jsonl."
              if len(shown) < len(items) else "") + "</p>",
           '<div class="controls"><select class="filter">' + "".join(options) + "</select>"
           '<input class="search" type="search" placeholder="search questions and answers">'
           f'<span class="count">{len(shown)} of {len(shown)} items shown</span></div>',
           '<table class="answers"><tr><th>id</th><th>image</th><th>question</th><th>gold</th>'
           + "".join(f"<th>{escape(m)}</th>" for m in models) + "</tr>"]
    for item in shown:
        images = []
        for path in item.images:
            url = thumbnails.url(path)
            images.append(f'<img src="{url}" alt="{escape(Path(path).name)}" title="{escape(path)}">' if url
                          else f'<span class="note">missing: {escape(Path(path).name)}</span>')
        cells = []
        for model in models:
            if model not in item.answers:
                cells.append('<td class="missing">-</td>')
                continue
            verdict = "" if item.gold is None else (' class="wrong"' if item.wrong(model) else ' class="right"')
            cells.append(f'<td{verdict} data-model="{escape(model)}">{escape(item.answers[model])}</td>')
        wrong_models = " ".join(escape(m) for m in models if item.wrong(m))
        out.append(f'<tr class="item" data-disagree="{int(item.disagree)}" data-wrong="{wrong_models}">'
                   f"<td>{escape(item.id)}</td><td>{''.join(images)}</td><td class=\"q\">{escape(_question(item.prompt))}"
                   f"</td><td>{escape(item.gold or '')}</td>{''.join(cells)}</tr>")
    out.append("</table></section>")
    return out


def build_report_html(run_dir: Path, stage_ids: list[str], report: dict[str, Any], *, title: str,
                      headlines: dict[str, str] | None = None, max_items: int = DEFAULT_MAX_ITEMS,
                      thumbnail_size: int = 72) -> str:
    """The page for the stages ``stage_ids`` of ``run_dir``; ``report`` is report.json's content."""
    headlines = headlines or {}
    answers = collect_answers(run_dir, stage_ids)
    thumbnails = Thumbnails(thumbnail_size)
    body = _findings_section(report.get("findings") or [])
    body += _aggregate_section(report.get("aggregate") or {}, headlines)
    body += _metrics_section(report, headlines)
    body += _training_section(run_dir, stage_ids, report)
    body.append('<section id="answers"><h2>Answers</h2>')
    if not answers:
        body.append('<p class="note">No eval stage wrote answers.</p>')
    order = {model: index for index, model in enumerate(report.get("models") or {})}
    for benchmark in answers.values():
        # models in the order the report lists them (the eval stage's), not the folders' names
        benchmark.models.sort(key=lambda model: (order.get(model, len(order)), model))
        body += _answers_section(benchmark, thumbnails, max_items)
    body.append("</section>")
    sections = [("metrics", "Metrics"), ("training", "Training"), ("answers", "Answers")]
    if report.get("findings"):
        sections.insert(0, ("findings", "Findings"))
    if (report.get("aggregate") or {}).get("models"):
        sections.insert(1 if report.get("findings") else 0, ("arms", "Across seeds"))
    nav = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1><nav>{nav}</nav></header><main>"
            + "\n".join(body) + f"</main><script>{SCRIPT}</script></body></html>\n")
