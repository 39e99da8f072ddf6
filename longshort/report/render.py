"""The report as one HTML file: overview, learning curves, evaluation, and the episode browser.

Everything is inside the file (CSS, the browser's script, the episodes as JSON, the evaluation plot
as a data URI), so it opens from a laptop's disk, a CI artefact or an e-mail with no network. The
curves are inline SVG drawn here; only the episode browser needs the script.
"""
from __future__ import annotations

import base64
import json
import math
import re
from datetime import datetime, timezone
from html import escape
from importlib import resources

from longshort.report.charts import Chart, Series, figure
from longshort.report.collect import Evaluation, RunData
from longshort.report.episodes import MAX_BYTES, MAX_PER_GROUP, TURN_CHARS, sample_groups

AGENT_COLOURS = ("#7b3294", "#1a9850", "#d95f02", "#2166ac", "#c51b7d", "#8c510a")
TERM_COLOURS = ("#2166ac", "#d95f02", "#1a9850", "#c51b7d", "#8c510a", "#01665e", "#762a83")
OUTCOME_COLOURS = {"correct": "#1a9850", "wrong": "#d73027", "turn_cap": "#8c510a", "budget": "#fdae61",
                   "error": "#4d4d4d"}


def _asset(name: str) -> str:
    return (resources.files("longshort.report") / "assets" / name).read_text(encoding="utf-8")


def agent_colours(roles: list[str]) -> dict[str, str]:
    return {role: AGENT_COLOURS[i % len(AGENT_COLOURS)] for i, role in enumerate(roles)}


# ------------------------------------------------------------------------------------------ overview


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "done (time not recorded)"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes < 60 else f"{int(minutes // 60)} h {int(minutes % 60)} min"


def markdown(text: str) -> str:
    """The Markdown the pipeline writes (pipe tables, headings, numbered notes, paragraphs) as HTML."""
    blocks, out = re.split(r"\n\s*\n", text.strip()), []
    for block in blocks:
        lines = block.splitlines()
        if all(line.startswith("|") for line in lines):
            rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
            body = [row for row in rows[1:] if not all(re.fullmatch(r":?-{3,}:?", c) for c in row)]
            head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
            out.append(f'<table class="md"><thead><tr>{head}</tr></thead><tbody>' + "".join(
                "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</tbody></table>")
        elif lines[0].startswith("#"):
            level = min(6, 2 + len(lines[0]) - len(lines[0].lstrip("#")))
            out.append(f"<h{level}>{escape(lines[0].lstrip('#').strip())}</h{level}>")
            if lines[1:]:
                out.append(markdown("\n".join(lines[1:])))
        elif all(re.match(r"\d+\. ", line) for line in lines):
            out.append("<ol>" + "".join(f"<li>{escape(line.split('. ', 1)[1])}</li>" for line in lines) + "</ol>")
        else:
            out.append(f"<p>{escape(' '.join(lines))}</p>")
    return "\n".join(out)


def _overview(run: RunData) -> str:
    parts = [f'<p class="path">Run folder: <code>{escape(str(run.path.resolve()))}</code></p>']
    if run.stages:
        rows = "".join(f"<tr><td>{escape(stage)}</td><td>{_duration(seconds)}</td></tr>"
                       for stage, seconds in run.stages)
        total = sum(seconds or 0.0 for _, seconds in run.stages)
        parts.append(f'<table class="md stages"><thead><tr><th>stage</th><th>time</th></tr></thead><tbody>{rows}'
                     f'<tr class="total"><td>all stages</td><td>{_duration(total)}</td></tr></tbody></table>')
    if run.metrics:
        steps = [row["time/step_s"] for row in run.metrics if "time/step_s" in row]
        if steps:
            parts.append(f"<p>RL: {len(run.metrics)} logged steps, {sum(steps) / len(steps):.1f} s per step on "
                         "average (rollout and update).</p>")
    if run.summary_md:
        parts.append('<h3>Summary</h3>' + markdown(run.summary_md))
    if run.config_text:
        parts.append(f"<details><summary>config.yaml</summary><pre class=\"config\">{escape(run.config_text)}</pre>"
                     "</details>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- curves


def _series(run: RunData, key: str, label: str, colour: str, dashed: bool = False) -> Series:
    return Series(label, colour, [(row["step"], row[key]) for row in run.metrics
                                  if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])], dashed)


def charts(run: RunData) -> list[Chart]:
    """The learning curves: reward terms per agent, then one chart per measure with a line per agent."""
    roles = [role for role in run.roles if any(key.split("/")[1:2] == [role] for row in run.metrics for key in row)]
    colours = agent_colours(run.roles)
    every_step = {row["step"] for row in run.metrics}
    out: list[Chart] = []
    for role in roles:
        terms = sorted({key.split("/")[2] for row in run.metrics for key in row
                        if key.startswith(f"reward/{role}/") and key != f"reward/{role}/total"})
        series = [_series(run, f"reward/{role}/{term}", term, TERM_COLOURS[i % len(TERM_COLOURS)])
                  for i, term in enumerate(terms)]
        series.append(_series(run, f"reward/{role}/total", "total (weighted)", "#000000", dashed=True))
        trained = [row["step"] for row in run.metrics if role in row.get("trained", [])]
        shade = trained if set(trained) != every_step else []
        out.append(Chart(f"Reward terms: {role} agent", series, shaded=shade,
                         note="shaded: steps that trained this agent" if shade else ""))
    per_agent = [("Total reward", "reward/{}/total", False, ""),
                 ("Own tokens per episode", "tokens/{}", False, ""),
                 ("Format rate (every own turn well-formed)", "format/{}", True, ""),
                 ("Groups with all-equal rewards (no gradient)", "groups/{}/all_equal", True,
                  "not logged by this run"),
                 ("KL to the reference", "train/{}/kl", False,
                  "no KL logged: trainer.kl_coef = 0 builds no reference model"),
                 ("Clip fraction", "train/{}/clip_frac", False, "")]
    for title, pattern, percent, empty_note in per_agent:
        chart = Chart(title, [_series(run, pattern.format(role), role, colours[role]) for role in roles],
                      percent=percent)
        chart.note = empty_note if chart.empty else ""
        out.append(chart)
        if pattern == "tokens/{}":
            out.append(_tokens_per_turn(run, roles, colours))
    out.insert(len(roles), Chart("Accuracy", [_series(run, "episode/accuracy", "verified answers", "#1a9850"),
                                              _series(run, "episode/finished", "well-formed final answer", "#636363",
                                                      dashed=True)], percent=True))
    out.append(_outcomes(run))
    return out


def _tokens_per_turn(run: RunData, roles: list[str], colours: dict[str, str]) -> Chart:
    series = [Series(role, colours[role], [(step, stats["tokens_per_turn"][role])
                                           for step, stats in sorted(run.step_stats.items())
                                           if role in stats["tokens_per_turn"]]) for role in roles]
    chart = Chart("Own tokens per turn", series)
    chart.note = "" if not chart.empty else "needs rl/episodes/ (not written by this run)"
    return chart


def _outcomes(run: RunData) -> Chart:
    classes = sorted({c for stats in run.step_stats.values() for c in stats["outcomes"]})
    palette = iter(AGENT_COLOURS[2:] + TERM_COLOURS)
    series = [Series(c, OUTCOME_COLOURS.get(c) or next(palette),
                     [(step, stats["outcomes"].get(c, 0.0)) for step, stats in sorted(run.step_stats.items())])
              for c in classes]
    chart = Chart("How episodes ended", series, percent=True)
    chart.note = "" if not chart.empty else "needs rl/episodes/ (not written by this run)"
    return chart


def _empty_figure(chart: Chart) -> str:
    return (f'<figure class="curve empty"><figcaption>{escape(chart.title)}</figcaption>'
            f'<div class="note">{escape(chart.note or "nothing logged")}</div></figure>')


def _curves(run: RunData) -> str:
    if not run.metrics:
        return ""
    figures = "".join(_empty_figure(c) if c.empty else figure(c) for c in charts(run))
    return (f'<section id="curves"><h2>Learning curves</h2><p class="hint">Means over each RL step\'s episodes '
            f'(rl/metrics.jsonl; tokens per turn and outcomes from rl/episodes/). Hover a point for its value.</p>'
            f'<div class="curves">{figures}</div></section>')


# ----------------------------------------------------------------------------------------- evaluation


def _png(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _evaluation(ev: Evaluation, open_: bool) -> str:
    body = markdown(ev.table_md) if ev.table_md else ""
    if not ev.results:
        body += ('<p class="hint">No results.json yet (the evaluation is running or was interrupted): its '
                 'finished episodes are in the episode browser.</p>')
    if ev.plot_png is not None:
        body += f'<img class="plot" alt="accuracy against tokens: {escape(ev.label)}" src="{_png(ev.plot_png)}">'
    seconds, tokens = ev.results.get("generation_seconds") or 0, ev.results.get("generated_tokens") or 0
    if seconds and tokens:
        body += f"<p>Generated {tokens:,} tokens in {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s).</p>"
    system = str(ev.results.get("system", ""))
    title = escape(ev.label if system in ("", ev.path.name) else f"{ev.label}: {system}")
    return f'<details class="evaluation"{" open" if open_ else ""}><summary>{title}</summary>{body}</details>'


def _evaluations(run: RunData) -> str:
    if not run.evaluations:
        return ""
    only = len(run.evaluations) == 1
    hint = "" if only else ('<p class="hint">One evaluation folder per checkpoint; the summary above compares '
                            'them. Open one for its benchmark table and accuracy-vs-tokens plot.</p>')
    return ('<section id="evaluation"><h2>Evaluation</h2>' + hint
            + "".join(_evaluation(ev, only) for ev in run.evaluations) + "</section>")


# ------------------------------------------------------------------------------------------ episodes


def browser_data(run: RunData, *, max_per_group: int = MAX_PER_GROUP, max_bytes: int = MAX_BYTES) -> dict:
    """What the episode browser's script reads: groups with counts over all episodes, and the sample."""
    groups = run.rl_groups + [group for ev in run.evaluations for group in ev.groups]
    shown, k = sample_groups(groups, max_per_group=max_per_group, max_bytes=max_bytes)
    rule = (f"Every episode is counted; at most {k} per RL step or evaluation set are embedded "
            f"(the most, up to {max_per_group}, that keeps the page under {max_bytes / 1e6:.0f} MB), taken "
            f"round-robin over the outcome classes so rare failures stay visible; turns over {TURN_CHARS:,} "
            "characters show their start and end.")
    return {"roles": agent_colours(run.roles), "rule": rule, "groups": [
        {"key": g.key, "label": g.label, "kind": g.kind, "total": len(g.episodes), "counts": g.counts(),
         "episodes": shown[g.key]} for g in groups]}


def _json_script(data: dict) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")  # a transcript's "</script>" or "<!--" cannot end the element early


def _browser(run: RunData, **limits) -> str:
    data = browser_data(run, **limits)
    if not data["groups"]:
        return ""
    return ('<section id="episodes"><h2>Episodes</h2>'
            f'<p class="hint">{escape(data["rule"])}</p>'
            '<div class="controls"><label>Episodes of <select id="ep-group"></select></label>'
            '<label>Outcome <select id="ep-outcome"></select></label><span id="ep-count"></span></div>'
            '<div class="browser"><div class="list"><table id="ep-list"></table></div>'
            '<div id="ep-detail" class="detail"><p class="hint">Open an episode from the list.</p></div></div>'
            f'<script type="application/json" id="report-data">{_json_script(data)}</script></section>')


# --------------------------------------------------------------------------------------------- page


def render(run: RunData, **limits) -> str:
    """The whole page. ``limits``: ``max_per_group`` and ``max_bytes`` of the episode sample."""
    browser = _browser(run, **limits)
    sections = [("overview", "Overview"), ("curves", "Learning curves") if run.metrics else None,
                ("evaluation", "Evaluation") if run.evaluations else None,
                ("episodes", "Episodes") if browser else None]
    nav = " ".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in filter(None, sections))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(run.name)}: longshort run report</title><style>{_asset("report.css")}</style></head>
<body><header><h1>{escape(run.name)} <span class="sub">longshort run report</span></h1><nav>{nav}</nav>
<span class="stamp">written {stamp}</span></header><main>
<section id="overview"><h2>Overview</h2>{_overview(run)}</section>
{_curves(run)}
{_evaluations(run)}
{browser}
</main><script>{_asset("report.js")}</script></body></html>
"""
