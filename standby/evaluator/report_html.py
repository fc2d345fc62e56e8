"""``report.html``: the evaluation report as one self-contained page, beside ``report.json`` and
``report.md`` and drawn from the same report. Its figures are inline SVG (``standby.plots``):
no JavaScript, no stylesheet or font to fetch, so it opens offline, from a mail attachment as
from the evaluation folder.

What it shows, each figure a ``<figure id=...>`` with a caption:

- ``fig-scores``: the distribution of the judge's scores, the candidate beside the serving model
  on the rows both answered (the gate's paired rows), or the candidate alone when no serving
  model was evaluated; the gate's thresholds marked;
- ``fig-difference``: the paired difference (candidate - serving) per criterion with its
  bootstrap interval, against the non-inferiority margin (only with a serving model);
- ``fig-overlap``: ROUGE-L and chrF of the answers against the reference;
- ``fig-tools``: the tool-use scores and their thresholds (only when rows offered tools);

then the worst rows, judge failures and cost. Every text that comes from data (prompts,
answers, the judge's reasons, file names) is escaped: an answer is untrusted input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from standby import plots
from standby.evaluator.report import BUCKETS, METRICS
from standby.evaluator.tool_use import SCORES as TOOL_SCORES

CRITERIA = ("similarity", "precision")
OVERLAP = ("rouge_l", "chrf")
LABELS = {
    "similarity": "similarity",
    "precision": "precision",
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    "tool_name_match": "name match",
    "tool_args_match": "arguments match",
    "tool_args_valid": "arguments valid",
}
_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #57606a; margin-bottom: .3em; }
figure svg { max-width: 100%; height: auto; }
.verdict { padding: .6em 1em; border-radius: 6px; font-weight: 600; }
.pass { background: #dafbe1; } .fail { background: #ffebe9; } .none { background: #f6f8fa; }
.note { background: #fff8c5; padding: .4em .8em; border-radius: 6px; }
.worst td { max-width: 28em; overflow-wrap: anywhere; }
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page."""
    models = ", ".join(str(m) for m in report["models"])
    body = [
        f"<h1>Evaluation of {escape(models)}</h1>",
        _about(report),
        _gate(report.get("gate")),
        _score_table(report),
        _score_figure(report),
        _difference(report.get("gate")),
        _overlap(report),
        _tools(report),
        _worst(report["worst"]),
        _failures(report),
        _cost(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Evaluation of {escape(models)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(part for part in body if part) + "\n</body>\n</html>\n"
    )


def _num(v: Any, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _figure(fig_id: str, caption: str, svg: str) -> str:
    return f'<figure id="{fig_id}">\n<figcaption>{escape(caption)}</figcaption>\n{svg}</figure>'


def _about(report: Mapping[str, Any]) -> str:
    src, judge = report["source"], report["judge"]
    items = [
        f"answers: <code>{escape(str(src.get('id')))}</code> [{escape(str(src.get('split')))}], "
        f"{report['rows']} rows",
        f"judge: <code>{escape(str(judge.get('model')))}</code>, "
        f"{escape(str(judge.get('eval_repeat')))} judgements per answer",
        f"finished: {escape(str(report.get('created_at')))}",
    ]
    note = (
        '<p class="note"><b>Simulated judge</b>: these scores come from standby\'s simulated '
        "Gemini, which measures the candidate against the reference (similarity: chrF; "
        "precision: chrF1); no model judged these answers.</p>"
        if judge.get("simulated")
        else ""
    )
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" + note


def _gate(gate: Mapping[str, Any] | None) -> str:
    if gate is None:
        return '<h2>Gate</h2><p class="verdict none">Not applied.</p>'
    verdict = "PASS" if gate["passed"] else "FAIL"
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in gate.get("reasons") or ())
    said = f"{verdict}, because:" if reasons else f"{verdict}: {escape(str(gate['detail']))}"
    return f'<h2>Gate</h2><p class="verdict {verdict.lower()}">{said}</p>' + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def _score_table(report: Mapping[str, Any]) -> str:
    rows = []
    for m in METRICS:
        s = report["scores"][m]
        cells = "".join(
            f'<td class="num">{_num(s[k])}</td>' for k in ("mean", "median", "min", "max")
        )
        rows.append(f'<tr><td>{LABELS[m]}</td>{cells}<td class="num">{s["n"]}</td></tr>')
    return (
        "<h2>Scores</h2><table><tr><th>metric</th><th>mean</th><th>median</th><th>min</th>"
        "<th>max</th><th>n</th></tr>" + "".join(rows) + "</table>"
    )


def _row_edges() -> list[float]:
    """The report's per-row histogram buckets (1-10, ..., 91-100) as bin edges."""
    return [float(lo - 1) for lo, _ in BUCKETS] + [float(BUCKETS[-1][1])]


def _row_counts(report: Mapping[str, Any], metric: str) -> list[int]:
    hist = report["scores"][metric].get("histogram") or {}
    return [int(hist.get(f"{lo}-{hi}", 0)) for lo, hi in BUCKETS]


def _score_figure(report: Mapping[str, Any]) -> str:
    gate = report.get("gate") or {}
    limits = {c: t["threshold"] for c, t in (gate.get("thresholds") or {}).items()}
    comp = gate.get("comparison") or {}
    paired = all("histogram" in (comp.get(c) or {}) for c in CRITERIA)
    panels = []
    for c in CRITERIA:
        marks = {"threshold": float(limits[c])} if c in limits else {}
        if paired:
            series = comp[c]["histogram"]
            counts = {"candidate": series["candidate"], "serving": series["serving"]}
        else:
            counts = {"candidate": _row_counts(report, c)}
        panels.append(plots.Panel(LABELS[c], counts, marks))
    if paired:
        edges = [float(e) for e in comp["bin_edges"]]
        caption = (
            f"The judge's scores of the candidate and of the serving model on the "
            f"{comp['paired_rows']} rows both answered (mean per row)."
        )
    else:
        edges = _row_edges()
        why = (
            "too few rows paired with the serving model" if comp else "no serving-model evaluation"
        )
        caption = f"The judge's scores of the candidate ({why} to compare)."
    svg = plots.histograms(panels, edges, title="Judge scores")
    return "<h2>Score distributions</h2>" + _figure("fig-scores", caption, svg)


def _difference(gate: Mapping[str, Any] | None) -> str:
    comp = (gate or {}).get("comparison") or {}
    rows = [c for c in CRITERIA if c in comp]
    if not rows:
        why = (
            f"only {comp['paired_rows']} rows were scored for both models"
            if comp
            else "no serving-model evaluation was given, so only the thresholds applied"
        )
        return f"<h2>Candidate vs serving model</h2><p>No paired comparison: {escape(why)}.</p>"
    margin = float(comp["margin"])
    intervals = [
        plots.Interval(LABELS[c], comp[c]["diff_mean"], comp[c]["ci_low"], comp[c]["ci_high"])
        for c in rows
    ]
    confidence = f"{comp['confidence']:.0%}"
    svg = plots.intervals(
        intervals,
        margin=margin,
        title=f"Candidate - serving, {confidence} bootstrap interval",
        xlabel="difference in mean score (points)",
    )
    caption = (
        f"The paired difference per row, candidate minus serving model "
        f"({escape(str(comp.get('baseline')))}), with its {confidence} interval from "
        f"{comp['bootstrap_samples']} bootstrap resamples. The candidate is not worse when the "
        f"interval stays right of -margin (margin {margin:g})."
    )
    table = "".join(
        f'<tr><td>{LABELS[c]}</td><td class="num">{comp[c]["candidate_mean"]:.1f}</td>'
        f'<td class="num">{comp[c]["serving_mean"]:.1f}</td>'
        f'<td class="num">{comp[c]["diff_mean"]:+.2f}</td>'
        f'<td class="num">[{comp[c]["ci_low"]:+.2f}, {comp[c]["ci_high"]:+.2f}]</td>'
        f"<td>{'yes' if comp[c]['passed'] else 'no'}</td></tr>"
        for c in rows
    )
    return (
        "<h2>Candidate vs serving model</h2>"
        + _figure("fig-difference", caption, svg)
        + "<table><tr><th>criterion</th><th>candidate</th><th>serving</th><th>difference</th>"
        f"<th>{confidence} interval</th><th>not worse</th></tr>{table}</table>"
    )


def _overlap(report: Mapping[str, Any]) -> str:
    panels = [plots.Panel(LABELS[m], {"candidate": _row_counts(report, m)}) for m in OVERLAP]
    svg = plots.histograms(panels, _row_edges(), title="Overlap with the reference")
    caption = "ROUGE-L (F1) and chrF of each answer against the reference answer, 0-100."
    return "<h2>Overlap metrics</h2>" + _figure("fig-overlap", caption, svg)


def _tools(report: Mapping[str, Any]) -> str:
    summary = report.get("tool_use")
    if summary is None:
        return ""
    gate_tools = (report.get("gate") or {}).get("tool_use") or {}
    values = {LABELS[s]: summary[s]["mean"] for s in TOOL_SCORES}
    limits = {LABELS[s]: float(gate_tools[s]["threshold"]) for s in TOOL_SCORES if s in gate_tools}
    svg = plots.scores(values, limits, title="Tool use")
    counts = ", ".join(f"{LABELS[s]} on {summary[s]['n']}" for s in TOOL_SCORES)
    caption = (
        f"{summary['rows']} rows offered tools; each score applies to some of them ({counts})."
    )
    return "<h2>Tool use</h2>" + _figure("fig-tools", caption, svg)


def _worst(worst: Sequence[Mapping[str, Any]]) -> str:
    if not worst:
        return ""
    rows = []
    for w in worst:
        reasons = " | ".join(str(r) for r in (*w["similarity_reasons"], *w["precision_reasons"]))
        scores = " / ".join(_num(w[m]) for m in METRICS)
        rows.append(
            f"<tr><td><code>{escape(str(w['sample_id']))}</code> #{escape(str(w['repeat_index']))}"
            f'</td><td class="num">{scores}</td><td>{escape(str(w["instruction"]))}</td>'
            f"<td>{escape(str(w['candidate']))}</td><td>{escape(reasons)}</td></tr>"
        )
    return (
        f'<h2>Worst {len(worst)} rows</h2><table class="worst"><tr><th>row</th>'
        "<th>similarity / precision / ROUGE-L / chrF</th><th>instruction</th><th>answer</th>"
        "<th>judge's reasons</th></tr>" + "".join(rows) + "</table>"
    )


def _failures(report: Mapping[str, Any]) -> str:
    j = report["judgements"]
    items = "".join(
        f"<li><code>{escape(str(f['sample_id']))}</code> #{escape(str(f['repeat_index']))}: "
        f"{escape(str(f['error']))}</li>"
        for f in report["failures"]
    )
    return (
        f"<h2>Judge failures</h2><p>{j['failed']} of {j['requested']} judgements failed; "
        f"{j['rows_without_score']} rows have no score.</p>"
        + (f"<ul>{items}</ul>" if items else "")
    )


def _cost(report: Mapping[str, Any]) -> str:
    c = report["cost"]
    return (
        f"<h2>Cost</h2><p>{c.get('calls', 0)} calls ({c.get('retries', 0)} retries, "
        f"{c.get('reasks', 0)} re-asks, {c.get('rate_limited', 0)} rate-limited), "
        f"{c.get('prompt_tokens', 0)} prompt + {c.get('completion_tokens', 0)} completion tokens; "
        f"{c.get('cache_hits', 0)} judgements from the cache; {report['seconds']:.1f} s.</p>"
    )
