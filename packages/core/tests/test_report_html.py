"""report.html: built from a run folder (``mllm report RUN``), self-contained, and working in
a real browser (headless Chromium): the metrics table, images, the models' answers and
the disagreement filter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from mllm.cli.main import main
from PIL import Image

# item id -> (question, gold, init's answer, dpo's answer)
ITEMS = {
    "q1": ("What shape is in the image?", "circle", "circle", "circle"),
    "q2": ("What color is the shape?", "blue", "red", "blue"),
    "q3": ("Is there a triangle?", "no", "yes", "yes"),
    "q4": ("Is the shape green?", "yes", "yes", "no"),
}
DISAGREE = {"q2", "q4"}
WRONG = {"q2", "q3", "q4"}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _stage(run: Path, stage_id: str, started: float, resolved: str = "{}\n") -> Path:
    folder = run / stage_id
    _write(folder / "stage.json", json.dumps({"fingerprint": stage_id * 4, "started": started}))
    _write(folder / "resolved_config.yaml", resolved)
    _write(folder / "COMPLETE", json.dumps({"fingerprint": stage_id * 4}))
    return folder


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as mllm run leaves it: init, a DPO stage, an eval of init and dpo, a report."""
    run = tmp_path / "runs" / "study"
    _write(run / ".mllm-run", "{}\n")
    _stage(run, "init", 1.0)
    (run / "init" / "model").mkdir()
    dpo = _stage(run, "dpo", 2.0)
    (dpo / "model").mkdir()
    log = [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s, "rewards/accuracies": min(1.0, 0.5 + 0.1 * s)}
           for s in range(1, 6)]
    _write(dpo / "train_log.jsonl", "".join(json.dumps(row) + "\n" for row in log))
    _write(dpo / "metrics.json", json.dumps({"loss": 0.45}))
    evaluate = _stage(run, "eval", 3.0, "benchmarks:\n- name: easyvqa\n  split: test\n")
    images = tmp_path / "images"
    images.mkdir()
    for index, colour in enumerate(("red", "blue", "green", "yellow")):
        Image.new("RGB", (64, 64), colour).save(images / f"{index}.png")
    for column, model in ((2, "init"), (3, "dpo")):
        rows = [{"id": item_id, "prompt": f"<image>\n{values[0]}\nAnswer the question using a single word or phrase.",
                 "images": [str(images / f"{index}.png")], "answer": values[column], "gold": values[1]}
                for index, (item_id, values) in enumerate(ITEMS.items())]
        _write(evaluate / model / "easyvqa" / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    metrics = {"init": {"easyvqa": {"accuracy": 0.5, "pope_f1": 0.4}}, "dpo": {"easyvqa": {"accuracy": 0.5, "pope_f1": 0.6}}}
    _write(evaluate / "metrics.json", json.dumps(metrics))
    report = _stage(run, "report", 4.0, "stages:\n- dpo\n- eval\n")
    _write(report / "report.json", json.dumps({"models": metrics, "training": {"dpo": {"loss": 0.45}}}, indent=2))
    return run


def rebuild(run: Path) -> Path:
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.is_file()
    return path


def test_mllm_report_rebuilds_a_self_contained_page(run_dir):
    before = (run_dir / "report" / "report.json").read_bytes()
    path = rebuild(run_dir)
    assert path == run_dir / "report" / "report.html"
    html = path.read_text()
    assert (run_dir / "report" / "report.json").read_bytes() == before  # report.json is left as it was
    # self-contained: nothing is fetched when it opens
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html) and "<link" not in html
    assert '<table class="metrics" data-benchmark="easyvqa">' in html
    assert html.count("<svg") == 4  # the accuracy bars, dpo's loss, reward margins and reward accuracies
    assert "dpo: reward margin" in html and "dpo: accuracies" in html and "easyvqa: accuracy" in html
    assert html.count('<tr class="item"') == 4 and html.count('src="data:image/') == 4
    for item_id in ITEMS:
        row = re.search(rf'<tr class="item" data-disagree="(\d)" data-wrong="([^"]*)"><td>{item_id}</td>', html)
        assert row, item_id
        assert (row.group(1) == "1") == (item_id in DISAGREE)
        assert bool(row.group(2)) == (item_id in WRONG)
    assert 'data-model="init">red</td>' in html and "the models disagree on 2" in html
    assert len(html) < 60_000  # thumbnails are small


def test_a_run_without_a_report_stage_gets_one_at_its_top(run_dir):
    shutil.rmtree(run_dir / "report")
    path = rebuild(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    assert '<table class="metrics"' in html and html.count('<tr class="item"') == 4


def test_mllm_report_on_a_folder_that_is_no_run_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "is not a run folder" in result.output


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium for this test")
    pytest.skip("chromium (headless browser) is not installed; apt-get install chromium to run this test")


def _browser(*args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--allow-file-access-from-files", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _visible_rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="item"(?![^>]*\bhidden)[^>]*><td>([^<]+)</td>', dom)


def test_the_report_works_in_headless_chromium(run_dir, tmp_path):
    path = rebuild(run_dir)
    url = path.resolve().as_uri()
    screenshot = tmp_path / "report.png"
    shot = _browser(f"--screenshot={screenshot}", "--window-size=1280,2200", url)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    with Image.open(screenshot) as image:  # the page drew something: not one blank colour
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20
    dom = _browser("--dump-dom", url).stdout
    assert '<table class="metrics"' in dom
    assert re.search(r'<img src="data:image/(png|jpeg);base64,', dom)
    assert 'data-model="dpo">blue</td>' in dom
    assert sorted(_visible_rows(dom)) == sorted(ITEMS) and "4 of 4 items shown" in dom  # the script ran
    filtered = _browser("--dump-dom", url + "#filter=disagree").stdout
    assert sorted(_visible_rows(filtered)) == sorted(DISAGREE) and "2 of 4 items shown" in filtered
    wrong_init = _browser("--dump-dom", url + "#filter=wrong:init").stdout
    assert sorted(_visible_rows(wrong_init)) == ["q2", "q3"]


def test_findings_and_the_seeds_aggregate_are_on_the_page(run_dir):
    """A study's report.json (arms over seeds, findings judged by the Welch rule) shows each
    verdict beside its rule, and each arm's mean ± std (n) with whiskers in its bar chart."""
    from mllm.reporting.findings import FindingConfig, aggregate, judge_findings

    models = {f"dpo-s{seed}": {"easyvqa": {"accuracy": value}} for seed, value in enumerate((0.80, 0.82, 0.81))}
    models |= {f"sft-s{seed}": {"easyvqa": {"accuracy": value}} for seed, value in enumerate((0.70, 0.71, 0.69))}
    arms = {"dpo": ["dpo-s0", "dpo-s1", "dpo-s2"], "sft": ["sft-s0", "sft-s1", "sft-s2"]}
    report = {"models": models, "training": {}, "arms": arms}
    report["aggregate"] = aggregate(report, arms)
    claims = [FindingConfig(claim="DPO beats SFT", metric="easyvqa.accuracy", arms=["dpo", "sft"], direction="higher",
                            paper="+2 points"),
              FindingConfig(claim="SFT beats DPO", metric="easyvqa.accuracy", arms=["sft", "dpo"], direction="higher")]
    report["findings"] = judge_findings(report, arms, claims)
    _write(run_dir / "report" / "report.json", json.dumps(report))
    html = rebuild(run_dir).read_text()
    assert '<a href="#findings">Findings</a><a href="#arms">Across seeds</a>' in html
    findings = html[html.index('<table class="findings">'):html.index("</table>", html.index('<table class="findings">'))]
    assert findings.count("<tr>") == 3
    assert '<td class="verdict-holds">holds</td>' in findings and "+2 points" in findings
    assert '<td class="verdict-does-not-hold">does not hold</td>' in findings
    assert "dpo: 0.8100 ± 0.0100 (n=3)" in findings and "sft: 0.7000 ± 0.0100 (n=3)" in findings
    assert html.count("Rule: Welch two standard errors") == 1  # the rule once, not per claim
    assert '<table class="aggregate" data-benchmark="easyvqa">' in html
    assert "easyvqa: accuracy (mean ± std)" in html and html.count('class="whisker"') == 2
