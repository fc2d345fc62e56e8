"""``report.html``: a real evaluation (the simulated Gemini judging, a serving model's evaluation
as the gate's baseline, rows with tools, an answer and a judge's reason that carry markup) gives
a self-contained page with its figures; headless Chromium (Debian's ``chromium``) opens it
offline and draws them."""

from __future__ import annotations

import random
import re
import subprocess
from html import escape
from pathlib import Path
from typing import Any

import orjson
from PIL import Image

from standby.evaluator.evaluate import run_evaluation
from tests.evaluator.test_evaluate import config, judged, write_answers
from tests.evaluator.test_gate import ROWS, scripted_eval
from tests.fixtures.prometheus import require_binary
from tests.fixtures.sim import RunningSim
from tests.fixtures.tool_calls import TOOLS

HOSTILE_ANSWER = '<script>alert("owned")</script> & <img src=x onerror=alert(1)>'
HOSTILE_REASON = "</td><script>steal()</script>"
PARIS = {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}
TIME = {"name": "get_time", "arguments": '{"zone":"UTC"}'}
FIGURES = ("fig-scores", "fig-difference", "fig-overlap", "fig-tools")
CANDIDATE_BLUE = (0x1F, 0x6F, 0xEB)  # standby.plots.COLOURS[0]: the candidate's bars


def evaluated(sim: RunningSim, tmp_path: Path, *, baseline: bool = True) -> Path:
    """A candidate's evaluation folder: 24 rows judged around 82 (row 0, the hostile answer,
    at 20), rows 1 and 2 with tools (one right call, one wrong); against a serving model
    judged around 80 on the same rows when ``baseline``."""
    kw: dict[str, Any] = {}
    if baseline:
        scripted_eval(sim, tmp_path, "serving", 80, gate=False)
        kw["baseline_eval_ds_id"] = str(tmp_path / "serving")
    texts = [HOSTILE_ANSWER] + [f"cand-{i}" for i in range(1, ROWS)]
    answers = write_answers(tmp_path / "cand-answers", texts, "cand")
    path = answers / "batch_infer.jsonl"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for row, made in ((rows[1], PARIS), (rows[2], TIME)):
        row |= {
            "tools": orjson.dumps(TOOLS).decode(),
            "target_tool_calls": [PARIS],
            "candidate_tool_calls": [made],
            "tool_error": None,
        }
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    sim.sim.script([judged(20, 20, HOSTILE_REASON)], match="onerror=alert(1)")
    rng = random.Random("cand")
    for i in range(1, ROWS):
        s, p = (round(82 + rng.uniform(-4, 4), 1) for _ in range(2))
        sim.sim.script([judged(s, p, f"cand row {i}")], match=f"cand-{i}\n")
    cfg = config(sim, tmp_path, answers, output_dir=tmp_path / "cand", cache_path=None, **kw)
    run_evaluation(cfg)
    assert sim.sim.stats()["script_pending"] == 0
    return tmp_path / "cand"


def figures(html: str) -> dict[str, str]:
    """Each ``<figure id>`` of the page and the SVG title inside it."""
    found = re.findall(
        r'<figure id="([^"]+)">\s*<figcaption>.*?</figcaption>\s*<svg[^>]*>\s*<title>(.*?)</title>',
        html,
        flags=re.S,
    )
    return dict(found)


def test_the_page_draws_candidate_serving_margin_tools_and_escapes_the_rows(
    sim: RunningSim, tmp_path: Path
) -> None:
    folder = evaluated(sim, tmp_path)
    html = (folder / "report.html").read_text(encoding="utf-8")
    gate = orjson.loads((folder / "report.json").read_bytes())["gate"]
    assert figures(html) == {
        "fig-scores": "Judge scores",
        "fig-difference": "Candidate - serving, 95% bootstrap interval",
        "fig-overlap": "Overlap with the reference",
        "fig-tools": "Tool use",
    }
    # Candidate and serving side by side on the paired rows, the thresholds marked.
    comp = gate["comparison"]
    assert comp["paired_rows"] == ROWS and comp["bin_edges"][::10] == [0, 50, 100]
    for c in ("similarity", "precision"):
        assert sum(comp[c]["histogram"]["candidate"]) == ROWS
        assert sum(comp[c]["histogram"]["serving"]) == ROWS
    assert "on the 24 rows both answered" in html
    scores = html[html.index('id="fig-scores"') : html.index('id="fig-difference"')]
    assert all(label in scores for label in ("candidate", "serving", "threshold"))
    # The interval against the margin: its bound drawn and said, the numbers in a table.
    assert "-margin (-2)" in html and "(margin 2)" in html
    sim_diff = comp["similarity"]["diff_mean"]
    assert f"{sim_diff:+.1f} [{comp['similarity']['ci_low']:+.1f}," in html
    # This candidate trails on tools and is within noise of the serving model: it fails.
    assert not gate["passed"] and '<p class="verdict fail">FAIL, because:</p>' in html
    assert all(f"<li>{escape(reason)}</li>" in html for reason in gate["reasons"])
    # Tool use: one of two rows called the right function.
    assert "2 rows offered tools" in html and "0.50" in html
    # The worst row is the hostile one, shown as text; no markup from the data survives.
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; &lt;img" in html
    assert "&lt;/td&gt;&lt;script&gt;steal()&lt;/script&gt;" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()
    # Self-contained: nothing to fetch (every reference is inside the page).
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith("#") for r in refs)


def test_without_a_serving_model_the_candidate_is_drawn_alone(
    sim: RunningSim, tmp_path: Path
) -> None:
    html = (evaluated(sim, tmp_path, baseline=False) / "report.html").read_text()
    assert set(figures(html)) == {"fig-scores", "fig-overlap", "fig-tools"}
    assert "no serving-model evaluation to compare" in html
    assert "No paired comparison: no serving-model evaluation was given" in html


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("chromium", "chromium")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            # Offline: no host resolves, so the page draws only with what it carries.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def test_chromium_opens_the_page_offline_and_draws_the_plots(
    sim: RunningSim, tmp_path: Path
) -> None:
    page = (evaluated(sim, tmp_path) / "report.html").as_uri()
    # The DOM Chromium built: every figure holds an SVG with its title and drawn shapes.
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
    assert set(figures(dom)) == set(FIGURES)
    for fig in FIGURES:
        part = dom[dom.index(f'id="{fig}"') :]
        part = part[: part.index("</figure>")]
        assert part.count("<path") > 5, fig
    # The screenshot: the candidate's blue bars are on it.
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", page, profile=tmp_path / "profile")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None
    blue = sum(n for n, rgb in colours if _near(rgb, CANDIDATE_BLUE))
    assert blue > 2000  # pixels of bars, not of a stray line


def _near(rgb: tuple[int, int, int], target: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(rgb, target, strict=True))
