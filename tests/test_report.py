"""``restlit report``: figures and report.md from a run directory's logs (a real tiny run's and
synthetic ones), robustness to missing columns, and the CLI's one-line errors."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.config import load_config, save_config
from restlit.regions import Region
from restlit.report import REGIONS, ReportError, build_report, read_metrics
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"
CORE_FIGURES = ("rewards", "entropy", "weights", "throughput")
runner = CliRunner()


# ---------------------------------------------------------------- helpers


def assert_png_ok(path: Path, min_size: tuple[int, int] = (800, 400)) -> None:
    """A decodable PNG of a legible size that is not blank (its pixels vary)."""
    import matplotlib.image as mpimg
    import numpy as np

    assert path.is_file() and path.stat().st_size > 10_000, path
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_size[0] and h >= min_size[1], (path, img.shape)
    assert w <= 2000 and h <= 1500, (path, img.shape)
    rgb = (img[..., :3] * 255).astype(np.uint32)
    assert float(np.std(rgb)) > 5, f"{path} looks blank"
    # more than a few colours: lines and text were drawn, not one flat panel
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    assert len(np.unique(packed[::3, ::3])) > 20, path
    # enough ink: an empty set of axes with ticks and labels covers about 0.5% of the pixels
    assert float((rgb.min(axis=2) < 230).mean()) > 0.015, f"{path} is nearly empty"


def colour_share(path: Path, hex_colour: str, tol: int = 12) -> float:
    """The fraction of the image's pixels within ``tol`` of ``hex_colour``."""
    import matplotlib.image as mpimg
    import numpy as np

    rgb = (mpimg.imread(path)[..., :3] * 255).astype(int)
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(rgb - target).max(axis=2) <= tol).mean())


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    keys = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def manifest_dict() -> dict:
    counts = {
        "records_read": 120,
        "records_rejected": 4,
        "records_with_samples": 110,
        "records_without_samples": 6,
        "turns": 150,
        "samples_written": 140,
        "turns_rejected": 10,
        "coerced": 0,
        "rejected": {"bad_json": 4, "wrong_type": 7, "unknown_tool": 3},
        "warnings": {"empty_system": 2},
    }
    return {
        "restlit_version": "0.1.0",
        "schema_version": 1,
        "options": {
            "format": "auto",
            "on_invalid": "reject",
            "val_fraction": 0.1,
            "seed": 0,
            "parquet": False,
        },
        "inputs": [
            {
                "path": "data/rlla.json",
                "sha256": "ab" * 32,
                "bytes": 12345,
                "container": "json_list",
                "format": "toolrl",
                "counts": counts,
            }
        ],
        "sources": {"toolrl": counts},
        "totals": counts,
        "splits": {"train": 126, "validation": 14},
    }


def synthetic_run(
    root: Path,
    *,
    steps: int = 150,
    mode: str = "entropy",
    val_every: int = 25,
    skip_every: int = 17,
    seed: int = 0,
) -> Path:
    """A run directory with a plausible metrics.csv (every region active, validation rows on their
    own lines as Lightning writes them, some skipped steps, the curriculum priors training logs for
    ``mode``), config.yaml, a prepared manifest, an eval.json and an sft/ run."""
    from restlit.objective import WeightConfig, region_priors, static_region_weights

    rng = random.Random(seed)
    run = root / "run"
    run.mkdir(parents=True)
    prepared = root / "prepared"
    prepared.mkdir()
    (prepared / "manifest.json").write_text(json.dumps(manifest_dict()))
    cfg = load_config(
        TINY,
        [
            f"output_dir={run}",
            f"data.prepared={prepared}",
            f"trainer.max_steps={steps}",
            f"objective.weights.mode={mode}",
            f"trainer.val_every={val_every}",
        ],
    )
    save_config(cfg, run / "config.yaml")
    rows = []
    for i in range(steps):
        t = i / max(steps - 1, 1)
        progress = (i + 1) / steps
        total = -2 + 4 * t + rng.gauss(0, 0.4)
        skipped = skip_every and i % skip_every == skip_every - 1
        row = {
            "step": i,
            "epoch": 0,
            "reward/total": total,
            "reward/total_std": 0.5 + rng.random() * 0.3,
            "reward/format": 0.2 + 0.7 * t + rng.gauss(0, 0.05),
            "reward/format_std": 0.2,
            "reward/correctness": total - 0.5,
            "reward/correctness_std": 0.6,
            "reward/exact_match": min(1, max(0, t * 0.6 + rng.gauss(0, 0.05))),
            "completion/length": 180 - 60 * t + rng.gauss(0, 8),
            "completion/truncated": max(0, 0.3 - 0.3 * t),
            "curriculum/progress": progress,
            "curriculum/structured_entropy": 1.5 * math.exp(-3 * t) + 0.1,
            "throughput/tokens_per_s": 900 + rng.gauss(0, 40),
            "time/rollout": 6 + rng.random(),
            "time/scoring": 0.3,
            "time/update": 0.0 if skipped else 3 + rng.random(),
            "skipped": float(skipped),
        }
        for k, r in enumerate(REGIONS):
            row[f"entropy/{r}"] = (0.3 + 0.25 * k) * math.exp(-2 * t) + 0.05 * k + 0.02
        if mode == "static":
            prior = static_region_weights(i + 1)
        elif mode == "entropy":  # the progress the step used: the previous step's
            prior = region_priors(progress - 1 / steps, WeightConfig())
        else:
            prior = [1.0] * len(REGIONS)
        for r in Region:
            row[f"curriculum/prior/{r.name}"] = float(prior[int(r)])
        if skipped:
            row["skipped/no_advantage"] = 1.0
        else:
            shares = [0.1, 0.35, 0.05, 0.08, 0.2, 0.12, 0.1]
            for k, r in enumerate(REGIONS):
                row[f"tokens/{r}"] = shares[k]
                row[f"weight/{r}"] = 0.6 + 0.1 * k + 0.4 * t * (1 if k % 2 else -1) + rng.gauss(0, 0.02)
            row.update(
                {
                    "train/loss": rng.gauss(0, 0.05),
                    "train/grad_norm": 1 + rng.random(),
                    "train/lr": 1e-6,
                    "train/clip_frac": 0.02 * rng.random(),
                    "train/approx_kl": 1e-3 * rng.random(),
                    "train/entropy": 1.2 - 0.5 * t,
                    "curriculum/progress_used": progress - 1 / steps,
                }
            )
        rows.append(row)
        if val_every and (i + 1) % val_every == 0:  # Lightning writes val keys on a row of their own
            rows.append(
                {
                    "step": i,
                    "epoch": 0,
                    "val/total": total + 0.3,
                    "val/format": 0.8,
                    "val/correctness": total - 0.2,
                    "val/exact_match": t * 0.5,
                }
            )
    write_metrics(run / "metrics.csv", rows)
    ev = run / "eval" / "heldout"
    ev.mkdir(parents=True)
    (ev / "eval.json").write_text(
        json.dumps(
            {
                "config": {"suites": ["heldout"], "model": str(run / "final")},
                "summary": {
                    "heldout": {
                        "items": 14,
                        "passed": 9,
                        "accuracy": 9 / 14,
                        "exact_match": 9 / 14,
                        "tool_name_accuracy": 0.9,
                        "param_f1": 0.75,
                        "format_validity": 1.0,
                    },
                    "overall": {"items": 14, "passed": 9, "accuracy": 9 / 14, "macro_accuracy": 9 / 14},
                },
                "missing": 0,
                "items": [],
            }
        )
    )
    (run / "sft").mkdir()
    write_metrics(
        run / "sft" / "metrics.csv",
        [
            {"step": i, "epoch": 0, "sft/loss": 3 * math.exp(-i / 10) + 0.4, "sft/target_tokens": 300 + i}
            for i in range(40)
        ],
    )
    return run


# ---------------------------------------------------------------- a real tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Two steps of the tiny config with a reward that varies per completion (so the policy is
    updated and weights, token shares and train/* are logged) and one validation pass."""
    from restlit.training.run import fit
    from tests.training import even_token_reward

    tmp = tmp_path_factory.mktemp("report_tiny")
    cfg = load_config(
        TINY,
        [
            f"output_dir={tmp / 'run'}",
            f"data.cache_dir={tmp / 'cache'}",
            "trainer.max_steps=2",
            "trainer.val_every=2",
            "trainer.checkpoint_every=100",
            "rollout.max_new_tokens=8",
            "rollout.n=2",
            "data.val_limit=2",
        ],
    )
    return fit(cfg, reward_fn=even_token_reward)


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory):
    """``restlit report`` on the tiny run, written elsewhere, averaging the last step only."""
    out = tmp_path_factory.mktemp("tiny_report") / "rep"
    result = runner.invoke(app, ["report", str(tiny_run), "-o", str(out), "--last", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_report_from_a_real_tiny_run(tiny_run, tiny_report):
    out, output = tiny_report
    assert f"report: {out / 'report.md'}" in output
    for name in CORE_FIGURES:
        assert f"figure: {out / name}.png" in output
        assert_png_ok(out / f"{name}.png")
    md = (out / "report.md").read_text()
    for section in (
        "# restlit report: run",
        "## Final metrics",
        "## Figures",
        "## Data",
        "## Resolved config",
    ):
        assert section in md
    for name in CORE_FIGURES:
        assert f"]({name}.png)" in md
    assert "mean of last 1" in md
    assert "| reward: total |" in md and "| validation reward: total |" in md and "| loss |" in md
    assert "```yaml\nmodel:\n" in md and "max_steps: 2" in md
    # the data counts come from the manifest the run prepared into data.cache_dir
    manifest = json.loads(next((tiny_run.parent / "cache").glob("prepared-*/manifest.json")).read_text())
    assert f"**{manifest['totals']['records_read']}**" in md
    assert f"train **{manifest['splits']['train']}**" in md
    for reason in manifest["totals"]["rejected"]:
        assert f"`{reason}`" in md


@pytest.mark.slow
def test_manifest_found_from_another_working_directory(tiny_run, tmp_path, monkeypatch):
    """data.raw is relative to where `fit` ran; from elsewhere the cache entry is matched on the
    inputs and options its manifest records."""
    from restlit.report.logs import find_manifest

    cfg = load_config(tiny_run / "config.yaml")
    cfg.data.cache_dir = str(Path(cfg.data.cache_dir).resolve())
    expected, how = find_manifest(cfg, None)
    assert expected is not None and "prepared into" in how
    monkeypatch.chdir(tmp_path)
    found, how = find_manifest(cfg, None)
    assert found is not None and found.resolve() == expected.resolve() and "matched" in how


# ---------------------------------------------------------------- synthetic runs


def test_synthetic_run_full_report(tmp_path):
    run = synthetic_run(tmp_path)
    report = build_report(run, tmp_path / "out", last_n=10)
    assert list(report.figures) == ["rewards", "entropy", "weights", "throughput", "training", "sft"]
    for path in report.figures.values():
        assert path.parent == tmp_path / "out"
        assert_png_ok(path)
    # every region is drawn, in its own colour, in the entropy and weight figures
    from restlit.report import REGION_COLORS

    for name in ("entropy", "weights"):
        for region, colour in REGION_COLORS.items():
            assert colour_share(report.figures[name], colour) > 5e-4, (name, region)
    md = report.markdown.read_text()
    # final metrics: the last step and the mean of the last 10
    log = read_metrics(run / "metrics.csv")
    last = log.rows[150]["reward/total"]
    mean = sum(log.rows[s]["reward/total"] for s in range(141, 151)) / 10
    assert f"| reward: total | {last:.4g} | 150 | {mean:.4g} | 10 |" in md
    assert "| `PARAM_VALUE` |" in md  # the per-region table
    assert "- Skipped steps (no policy update): **8** (`no_advantage` 8)" in md
    # data counts, per reason
    assert "| `wrong_type` | 7 | 7 |" in md and "train **126**, validation **14**" in md
    # eval summary and the sft run
    assert (
        "## Evaluation" in md and "`eval/heldout/eval.json`" in md and "| `heldout` | 14 | 9 | 64.29 |" in md
    )
    assert "SFT warm start (`sft/`): 40 steps" in md and "](sft.png)" in md


@pytest.mark.parametrize("mode", ["static", "uniform"])
def test_weights_figure_in_static_and_uniform_modes(tmp_path, mode):
    from restlit.report.figures import plot_weights
    from restlit.report.logs import curriculum_priors, load_run_config

    run = synthetic_run(tmp_path, steps=30, mode=mode)
    log = read_metrics(run / "metrics.csv")
    cfg, raw, _ = load_run_config(run)
    got_mode, steps, priors = curriculum_priors(log, cfg, raw)
    assert got_mode == mode
    if mode == "static":  # the released code's constants: tool name held at 1.2, RESPONSE at 0
        assert steps == log.steps
        assert {round(v, 6) for v in priors["TOOL_NAME"]} == {1.2} and set(priors["RESPONSE"]) == {0.0}
    else:
        assert steps == []
    assert_png_ok(plot_weights(log, tmp_path / "weights.png", cfg=cfg, raw=raw))


def test_entropy_mode_priors_follow_the_progress(tmp_path):
    from restlit.objective import WeightConfig, region_priors
    from restlit.report.logs import curriculum_priors, load_run_config

    run = synthetic_run(tmp_path, steps=20, skip_every=0, val_every=0)
    log = read_metrics(run / "metrics.csv")
    cfg, raw, _ = load_run_config(run)
    _, steps, priors = curriculum_priors(log, cfg, raw)
    nu = log.rows[20]["curriculum/progress_used"]
    assert steps[-1] == 20
    assert priors["FORMAT"][-1] == pytest.approx(float(region_priors(nu, WeightConfig())[Region.FORMAT]))
    assert priors["FORMAT"][0] > priors["FORMAT"][-1] and priors["THINK"][0] < priors["THINK"][-1]


def test_priors_not_logged_are_said_so_not_recomputed(tmp_path, monkeypatch):
    """A run from before training logged curriculum/prior/<REGION>: no priors, and the panel says
    they were not logged."""
    from restlit.report import figures, plots_regions
    from restlit.report.logs import curriculum_priors, load_run_config

    run = synthetic_run(tmp_path, steps=12)
    path = run / "metrics.csv"
    with path.open(newline="") as f:
        rows = [{k: v for k, v in r.items() if not k.startswith("curriculum/prior/")}
                for r in csv.DictReader(f)]
    write_metrics(path, rows)
    log = read_metrics(path)
    cfg, raw, _ = load_run_config(run)
    assert curriculum_priors(log, cfg, raw) == ("entropy", [], {r: [] for r in REGIONS})
    said = []
    original = plots_regions._no_data
    monkeypatch.setattr(plots_regions, "_no_data", lambda ax, msg: said.append(msg) or original(ax, msg))
    assert_png_ok(figures.plot_weights(log, tmp_path / "weights.png", cfg=cfg, raw=raw))
    assert said == ["not logged: curriculum/prior/<REGION> (a run from before training logged its priors)"]


def test_every_step_skipped_and_missing_columns(tmp_path):
    """A log with only the columns a skipped step writes (no train/*, weight/*, tokens/*), no
    config, no manifest: the figures still render and say what is missing."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {
            "step": i,
            "epoch": 0,
            "reward/total": -4.0 + 0.01 * i,
            "reward/format": -2.0,
            "skipped": 1.0,
            "skipped/no_advantage": 1.0,
            "curriculum/progress": (i + 1) / 3,
            "entropy/OTHER": 10.8,
            **{f"entropy/{r.name}": 0.0 for r in Region if r is not Region.OTHER},
        }
        for i in range(3)
    ]
    write_metrics(run / "metrics.csv", rows)
    report = build_report(run)
    assert report.markdown == run / "report" / "report.md"
    for name in CORE_FIGURES:
        assert_png_ok(report.figures[name])
    md = report.markdown.read_text()
    assert "No `config.yaml` in the run directory." in md
    assert "No `manifest.json` found" in md
    assert "**3** (`no_advantage` 3)" in md
    assert "No tokens in any step: `FORMAT`, `THINK`" in md


def test_sft_run_directory(tmp_path):
    run = synthetic_run(tmp_path, steps=5)
    report = build_report(run / "sft")
    assert list(report.figures) == ["sft"]
    assert_png_ok(report.figures["sft"], min_size=(800, 300))
    md = report.markdown.read_text()
    assert "Run kind: SFT" in md and "| SFT loss |" in md


def test_read_metrics_merges_rows_by_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("a,b,step\n1.0,,0\n,2.0,0\nnan,3,1\na,b,step\n")
    log = read_metrics(path)
    assert log.rows == {1: {"a": 1.0, "b": 2.0}, 2: {"b": 3.0}}
    assert log.series("a") == ([1], [1.0])


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such run directory"),
        ("no_metrics", "metrics.csv: no such file"),
        ("empty", "no logged steps yet"),
        ("not_metrics", "not a metrics log"),
        ("sft_only", "the SFT run's logs are in"),
        ("file", "not a directory"),
        ("out_is_a_file", "cannot create the output directory"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, case, message):
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "empty":
        (run / "metrics.csv").write_text("step,reward/total\n")
    if case == "not_metrics":
        (run / "metrics.csv").write_text("x,y\n1,2\n")
    if case == "file":
        run.rmdir()
        run.write_text("x")
    if case == "out_is_a_file":
        (run / "metrics.csv").write_text("step,reward/total\n0,1.0\n")
        (run / "report").write_text("x")
    if case == "sft_only":
        (run / "sft").mkdir()
        (run / "sft" / "metrics.csv").write_text("step,sft/loss\n0,1.0\n")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    with pytest.raises(ReportError):
        build_report(run)
