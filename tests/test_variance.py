"""``restlit diagnose variance``: the math against float64 references and analytic cases, and the
measurement on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from restlit.config import load_config
from restlit.experiments.variance_math import (
    CountSketch,
    bootstrap_relative_variance,
    gradient_variance,
    gram_relative_variance,
    mean_cosine,
    part_variances,
    relative_variance,
    stratified_relative_variance,
    variance_bound,
)
from restlit.objective import NUM_REGIONS, WeightConfig, policy_loss, region_entropy_stats, token_weights
from restlit.regions import Region
from tests.conftest import REPO


def test_moments_and_gram_give_the_textbook_relative_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 50, generator=g, dtype=torch.float64) + 0.3
    mean = x.mean(0)
    reference = ((x - mean) ** 2).sum(1).sum() / 6 / (mean @ mean)
    trace, total = (x * x).sum(), x.sum(0) @ x.sum(0)
    assert float(relative_variance(trace, total, 7)) == pytest.approx(float(reference), rel=1e-12)
    assert float(gram_relative_variance(x @ x.T)) == pytest.approx(float(reference), rel=1e-12)


def test_stratified_relative_variance_by_hand_and_against_float64():
    """Two batches of two parts, one dimension: parts (1, 3) and (0, 2), totals (1, 5). Each part's
    variance is 2, so by part V = 4 and the relative variance 4 / 3^2; the totals' own variance is
    8 (the parts' cross product, 2 here, counted twice): 8 / 9."""
    parts = torch.tensor([[[1.0], [3.0]], [[0.0], [2.0]]], dtype=torch.float64)  # [P, K, D]
    totals = parts.sum(0)
    pg = parts @ parts.transpose(1, 2)
    assert float(stratified_relative_variance(totals @ totals.T, pg)) == pytest.approx(4 / 9, rel=1e-12)
    assert float(gram_relative_variance(totals @ totals.T)) == pytest.approx(8 / 9, rel=1e-12)
    assert part_variances(pg).tolist() == pytest.approx([2.0, 2.0], rel=1e-12)
    # float64 reference from the vectors, and one part is the plain estimate
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 9, 30, generator=g, dtype=torch.float64) + 0.2  # [P, K, D]
    t = x.sum(0)
    reference = ((x - x.mean(1, keepdim=True)) ** 2).sum((1, 2)).sum() / 8 / (t.mean(0) @ t.mean(0))
    measured = stratified_relative_variance(t @ t.T, x @ x.transpose(1, 2))
    assert float(measured) == pytest.approx(float(reference), rel=1e-12)
    each = ((x - x.mean(1, keepdim=True)) ** 2).sum((1, 2)) / 8  # each part's variance, from the vectors
    assert part_variances(x @ x.transpose(1, 2)).tolist() == pytest.approx(each.tolist(), rel=1e-12)
    assert float(stratified_relative_variance(x[0] @ x[0].T, (x[0] @ x[0].T)[None])) == pytest.approx(
        float(gram_relative_variance(x[0] @ x[0].T)), rel=1e-12)
    zero = torch.zeros(2, 3, 3, dtype=torch.float64)
    assert math.isinf(float(stratified_relative_variance(zero[0], zero)))


def test_the_estimate_by_part_hits_the_same_target_with_less_spread():
    """Independent parts g_pk = mu_p + sigma z: both estimators center on sum sigma^2 / ||sum mu||^2
    (to within their shared small-K bias), and with 8 parts of equal size the one by part spreads
    about half as much where the variance's own noise dominates (a mean large against the spread,
    few directions: 1 / sqrt(8) for the numerator alone)."""
    g = torch.Generator().manual_seed(8)
    p, k, d, reps = 8, 24, 2, 400
    mu = torch.ones(p, d, dtype=torch.float64)
    sigma = 0.63
    truth = p * d * sigma**2 / float(mu.sum(0) @ mu.sum(0))
    plain, by_part = [], []
    for _ in range(reps):
        x = mu[:, None] + sigma * torch.randn(p, k, d, generator=g, dtype=torch.float64)
        t = x.sum(0)
        plain.append(float(gram_relative_variance(t @ t.T)))
        by_part.append(float(stratified_relative_variance(t @ t.T, x @ x.transpose(1, 2))))
    plain_t, part_t = torch.tensor(plain), torch.tensor(by_part)
    assert float(plain_t.median()) == pytest.approx(truth, rel=0.1)
    assert float(part_t.median()) == pytest.approx(truth, rel=0.1)
    assert float(part_t.std()) < 0.6 * float(plain_t.std())


def test_relative_variance_of_a_known_gaussian_estimator():
    """g = mu + sigma * z: E||g - Eg||^2 / ||Eg||^2 = sum sigma^2 / ||mu||^2."""
    g = torch.Generator().manual_seed(1)
    mu = torch.linspace(-1, 2, 20, dtype=torch.float64)
    sigma = torch.linspace(0.5, 3, 20, dtype=torch.float64)
    k = 40_000
    x = mu + sigma * torch.randn(k, 20, generator=g, dtype=torch.float64)
    measured = relative_variance((x * x).sum(), x.sum(0) @ x.sum(0), k)
    assert float(measured) == pytest.approx(float((sigma**2).sum() / (mu @ mu)), rel=0.03)


def _score_case():
    """Tokens with their own logits (the parameters), two regions of very different entropy."""
    g = torch.Generator().manual_seed(2)
    t, v = 12, 6
    logits = torch.randn(t, v, generator=g, dtype=torch.float64)
    logits[:6] *= 6.0  # sharp: low entropy (say, tool names)
    regions = torch.tensor([int(Region.TOOL_NAME)] * 6 + [int(Region.THINK)] * 6)[None]
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1)
    return logits, regions, p, entropy


def test_weighted_score_variance_matches_the_analytic_ratio_and_respects_the_bound():
    """On-policy, d loss / d z_t = -(w_t A / D) (onehot(a_t) - p_t), so the estimator's variance is
    (A / D)^2 sum_t w_t^2 (1 - sum_a p_ta^2): measured through ``policy_loss`` per weighting, the
    ratio entropy / uniform matches, and each variance lies below the bound sum w^2 (1 - exp(-H))."""
    logits, regions, p, entropy = _score_case()
    t, v = logits.shape
    mask = torch.ones(1, t, dtype=torch.float64)
    stats = region_entropy_stats(entropy[None], regions, mask)
    n = 6000
    gen = torch.Generator().manual_seed(3)
    actions = torch.multinomial(p, n, replacement=True, generator=gen).T  # [n, t]
    measured, analytic, bound = {}, {}, {}
    for mode in ("uniform", "entropy"):
        w = token_weights(regions, mask, WeightConfig(mode=mode), region_stats=stats).to(torch.float64)  # [1, t]
        d = float(w.sum())
        z = logits.expand(n, t, v).clone().requires_grad_(True)  # one copy per sample: per-sample gradients
        logp = z.log_softmax(-1).gather(-1, actions[..., None]).squeeze(-1)
        loss, _ = policy_loss(logp, logp.detach(), torch.ones(n, dtype=torch.float64), mask.expand(n, t),
                              w.expand(n, t), denominator=n * d)
        (grad,) = torch.autograd.grad(loss, z)
        per_sample = (grad * n).reshape(n, -1)  # each row: one batch's estimate
        total = per_sample.sum(0)
        measured[mode] = float(gradient_variance((per_sample**2).sum(), total @ total, n))
        analytic[mode] = float((w[0] ** 2 * (1 - (p**2).sum(-1))).sum()) / d**2
        bound[mode] = float(variance_bound(w, entropy[None], regions, mask)[-1]) / d**2
        assert measured[mode] == pytest.approx(analytic[mode], rel=0.05)
        assert analytic[mode] <= bound[mode] + 1e-12
    assert measured["entropy"] / measured["uniform"] == pytest.approx(analytic["entropy"] / analytic["uniform"],
                                                                      rel=0.05)
    assert analytic["entropy"] < analytic["uniform"]  # up-weighting the sharp tokens lowers this variance


def test_variance_bound_splits_by_region():
    w = torch.tensor([[1.0, 2.0, 0.5, 9.0]])
    h = torch.tensor([[0.0, 1.0, 2.0, 5.0]], dtype=torch.float64)
    regions = torch.tensor([[int(Region.FORMAT), int(Region.THINK), int(Region.THINK), int(Region.OTHER)]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    b = variance_bound(w, h, regions, mask)
    assert float(b[Region.FORMAT]) == 0.0
    assert float(b[Region.THINK]) == pytest.approx(4 * (1 - math.exp(-1)) + 0.25 * (1 - math.exp(-2)), rel=1e-12)
    assert float(b[Region.OTHER]) == 0.0 and float(b[-1]) == pytest.approx(float(b[Region.THINK]), rel=1e-12)


def test_count_sketch_preserves_inner_products():
    g = torch.Generator().manual_seed(4)
    sizes = [3000, 70, 5000]
    a = [torch.randn(s, generator=g) for s in sizes]
    b = [x + 0.5 * torch.randn(x.shape, generator=g) for x in a]
    flat = lambda xs: torch.cat(xs).double()
    exact = float(flat(a) @ flat(b))
    sketch = CountSketch(sizes, 1 << 14, seed=0)
    sa, sb = sketch(a), sketch(b)
    assert float(sa @ sb) == pytest.approx(exact, rel=0.05)
    assert float(sa @ sa) == pytest.approx(float(flat(a) @ flat(a)), rel=0.05)
    assert torch.equal(CountSketch(sizes, 0)(a), flat(a))  # dim 0: exact


def test_cosine_and_bootstrap():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(30, 8, generator=g, dtype=torch.float64) + 1
    b = -a
    assert float(mean_cosine(a @ b.T, a @ a.T, b @ b.T)) == pytest.approx(-1.0, rel=1e-12)
    (lo, hi), = bootstrap_relative_variance([a @ a.T], n_boot=300)
    assert lo <= float(gram_relative_variance(a @ a.T)) <= hi
    x = torch.randn(4, 30, 8, generator=g, dtype=torch.float64) + 0.3  # parts of a
    t = x.sum(0)
    (plo, phi), = bootstrap_relative_variance([t @ t.T], n_boot=300, parts=[x @ x.transpose(1, 2)])
    assert plo <= float(stratified_relative_variance(t @ t.T, x @ x.transpose(1, 2))) <= phi
    assert (plo, phi) != bootstrap_relative_variance([t @ t.T], n_boot=300)[0]


def even_token_reward(completion, item, step):
    from restlit.rewards import Reward, RewardBounds

    share = sum(1 for t in completion.token_ids if t % 2 == 0) / max(len(completion.token_ids), 1)
    return Reward(0.0, share, share, RewardBounds(0.0, 0.0, 0.0, 1.0))


def test_diagnose_variance_on_the_tiny_model(tmp_path):
    """Finite numbers for every weighting; the sketch agrees with the exact gradients on the same samples."""
    from restlit.experiments.variance import markdown, measure_variance

    config = load_config(REPO / "configs" / "tiny-test.yaml",
                         [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}"])
    kwargs = {"batches": 3, "params": ["layers.1."], "n_boot": 50, "reward_fn": even_token_reward, "log": lambda m: None}
    sketched = measure_variance(config, sketch_dim=1 << 12, **kwargs)
    exact = measure_variance(config, sketch_dim=0, **kwargs)
    for report in (sketched, exact):
        assert set(report["weightings"]) == {"uniform", "static", "entropy", "top-entropy"}
        for m in ("uniform", "entropy", "top-entropy"):
            w = report["weightings"][m]
            assert math.isfinite(w["relative_variance"]) and w["relative_variance"] > 0
            assert w["mean_gradient_norm"] > 0 and w["bound"]["total"]["value"] > 0
        # a random model writes no structure: all OTHER, which the released code's static weights zero
        static = report["weightings"]["static"]
        assert static["mean_gradient_norm"] == 0 and static["bound"]["total"]["value"] == 0
        assert static["bound"]["OTHER"]["value"] == 0 < report["weightings"]["uniform"]["bound"]["OTHER"]["value"]
        assert all(-1 <= c <= 1 for c in report["cosine"].values())
    for m in ("uniform", "entropy"):
        assert sketched["weightings"][m]["relative_variance"] == pytest.approx(
            exact["weightings"][m]["relative_variance"], rel=0.25)
    for m in ("uniform", "entropy"):  # by prompt: present, finite, and the reference's ratio is 1
        w = exact["weightings"][m]["by_prompt"]
        assert math.isfinite(w["relative_variance"]) and w["relative_variance"] > 0
        lo, hi = w["ratio_ci"]
        assert lo <= hi
    assert exact["weightings"]["uniform"]["by_prompt"]["ratio_to_uniform"] == 1.0
    # each prompt's variance: they sum to the estimate by prompt's numerator, shares to 1, and the
    # per-prompt ratio divides the two weightings' variances of that prompt
    for m in ("uniform", "entropy"):
        w, by = exact["weightings"][m], exact["weightings"][m]["by_prompt"]
        assert len(by["prompt_variance"]) == len(exact["prompts"]) and sum(by["prompt_share"]) == pytest.approx(1.0)
        assert sum(by["prompt_variance"]) == pytest.approx(by["variance"], rel=1e-12)
        assert by["variance"] / w["mean_gradient_norm"] ** 2 == pytest.approx(by["relative_variance"], rel=1e-9)
        assert w["variance"] / w["mean_gradient_norm"] ** 2 == pytest.approx(w["relative_variance"], rel=1e-9)
    u, e = (exact["weightings"][m]["by_prompt"] for m in ("uniform", "entropy"))
    spread = [p for p, v in enumerate(u["prompt_variance"]) if v > 0]
    assert spread
    for p in spread:
        assert e["prompt_ratio_to_uniform"][p] == pytest.approx(e["prompt_variance"][p] / u["prompt_variance"][p],
                                                                rel=1e-12)
    table = markdown(exact)
    assert "Variance prompt by prompt" in table and all(f"| {pid} |" in table for pid in exact["prompts"])
    # the same samples: the bound, which needs no gradient, is identical
    assert sketched["weightings"]["entropy"]["bound"] == exact["weightings"]["entropy"]["bound"]
    # a subset measures the same numbers on the same samples, only fewer of them
    subset = measure_variance(config, sketch_dim=0, weightings=("entropy", "uniform"), **kwargs)
    assert list(subset["weightings"]) == ["uniform", "entropy"]
    for key in ("relative_variance", "ratio_to_uniform", "mean_gradient_norm"):
        assert subset["weightings"]["entropy"][key] == pytest.approx(exact["weightings"]["entropy"][key], rel=1e-9)
    assert subset["cosine"]["uniform/entropy"] == pytest.approx(exact["cosine"]["uniform/entropy"], rel=1e-9)


def test_stored_batches_continue_to_the_report_of_one_call(tmp_path):
    """A call with ``store`` keeps each batch; a later call with more batches measures only the new
    ones and reports what one call with all of them reports. Other settings on the same store are
    refused, naming the setting."""
    from restlit.errors import UserError
    from restlit.experiments.variance import measure_variance, stored_batches

    config = load_config(REPO / "configs" / "tiny-test.yaml",
                         [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}"])
    kwargs = {"sketch_dim": 1 << 10, "params": ["layers.1."], "n_boot": 50, "reward_fn": even_token_reward,
              "weightings": ("uniform", "entropy")}
    store = tmp_path / "batches"
    measure_variance(config, batches=2, store=store, log=lambda m: None, **kwargs)
    assert stored_batches(store) == 2
    measured: list[str] = []
    resumed = measure_variance(config, batches=3, store=store, log=measured.append, **kwargs)
    assert measured == ["batch 3/3: reward " + measured[0].rsplit(" ", 1)[1]] and stored_batches(store) == 3
    whole = measure_variance(config, batches=3, log=lambda m: None, **kwargs)
    assert resumed["mean_reward"] == pytest.approx(whole["mean_reward"], rel=1e-12)
    for m in ("uniform", "entropy"):
        for key in ("relative_variance", "ratio_to_uniform", "mean_gradient_norm"):
            assert resumed["weightings"][m][key] == pytest.approx(whole["weightings"][m][key], rel=1e-9)
        assert resumed["weightings"][m]["bound"] == whole["weightings"][m]["bound"]
        for key in ("relative_variance", "ratio_to_uniform"):
            assert resumed["weightings"][m]["by_prompt"][key] == pytest.approx(
                whole["weightings"][m]["by_prompt"][key], rel=1e-9)
    # each stored batch keeps one part per prompt, and they sum to the batch's gradient
    saved = torch.load(store / "batch-00002.pt", weights_only=True)
    for m in ("uniform", "entropy"):
        assert saved["parts"][m].shape == (config.trainer.prompts_per_step, 1 << 10)
        assert torch.allclose(saved["parts"][m].sum(0), saved["rows"][m], rtol=0, atol=1e-12)
    # a batch kept by the version that stored totals only: the plain estimate, none by prompt
    del saved["parts"]
    torch.save(saved, store / "batch-00002.pt")
    older = measure_variance(config, batches=3, store=store, log=lambda m: None, **kwargs)
    assert all("by_prompt" not in w for w in older["weightings"].values())
    assert older["weightings"]["entropy"]["relative_variance"] == pytest.approx(
        whole["weightings"]["entropy"]["relative_variance"], rel=1e-9)
    with pytest.raises(UserError, match=r"batch-00000\.pt: measured with another step than"):
        measure_variance(config, batches=3, store=store, step=2, log=lambda m: None, **kwargs)
    reseeded = load_config(REPO / "configs" / "tiny-test.yaml", [f"output_dir={tmp_path / 'run'}",
                           f"data.cache_dir={tmp_path / 'cache'}", "model.seed=1"])
    with pytest.raises(UserError, match=r"measured with another model\.seed than"):
        measure_variance(reseeded, batches=3, store=store, log=lambda m: None, **kwargs)
    # starting over deletes the stored batches only once the settings are known to be good
    with pytest.raises(UserError, match="--weightings"):
        measure_variance(config, batches=3, store=store, restart=True, log=lambda m: None,
                         **(kwargs | {"weightings": ("uniform", "bogus")}))
    assert stored_batches(store) == 3
    (store / "batch-00001.pt").write_bytes(b"cut short")
    with pytest.raises(UserError, match=r"batch-00001\.pt: not a measured batch"):
        measure_variance(config, batches=3, store=store, log=lambda m: None, **kwargs)
    measure_variance(config, batches=2, store=store, restart=True, log=lambda m: None, **kwargs)
    assert stored_batches(store) == 2 and not list(store.glob(".*"))


def test_shards_split_the_batches_and_the_report_reads_them_all(tmp_path):
    """``shard=(i, n)`` measures only the batches ``k % n == i`` and reports nothing; after every
    shard, a call without one measures nothing and reports what one call with all the batches does."""
    from restlit.errors import UserError
    from restlit.experiments.variance import measure_variance, stored_batches

    config = load_config(REPO / "configs" / "tiny-test.yaml",
                         [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}"])
    kwargs = {"sketch_dim": 1 << 10, "params": ["layers.1."], "n_boot": 50, "reward_fn": even_token_reward,
              "weightings": ("uniform", "entropy")}
    store = tmp_path / "batches"
    first: list[str] = []
    assert measure_variance(config, batches=3, store=store, shard=(1, 2), log=first.append, **kwargs) is None
    assert [m.split(":")[0] for m in first] == ["batch 2/3"] and sorted(p.name for p in store.iterdir()) == [
        "batch-00001.pt"]
    assert measure_variance(config, batches=3, store=store, shard=(0, 2), log=lambda m: None, **kwargs) is None
    assert stored_batches(store) == 3
    measured: list[str] = []
    joined = measure_variance(config, batches=3, store=store, log=measured.append, **kwargs)
    whole = measure_variance(config, batches=3, log=lambda m: None, **kwargs)
    assert measured == []
    for m in ("uniform", "entropy"):
        for key in ("relative_variance", "ratio_to_uniform", "variance"):
            assert joined["weightings"][m][key] == pytest.approx(whole["weightings"][m][key], rel=1e-9)
    for shard, extra in [((2, 2), {}), ((0, 2), {"restart": True}), ((0, 2), {"store": None})]:
        with pytest.raises(UserError, match="--shard"):
            measure_variance(config, batches=3, **({"store": store} | extra), shard=shard, log=lambda m: None, **kwargs)
    assert stored_batches(store) == 3


@pytest.mark.parametrize("weightings", [("entropy",), ("uniform", "bogus")])
def test_diagnose_variance_names_a_bad_weighting_in_one_line(weightings):
    from restlit.errors import UserError
    from restlit.experiments.variance import measure_variance

    config = load_config(REPO / "configs" / "tiny-test.yaml")
    with pytest.raises(UserError, match="--weightings .*uniform"):
        measure_variance(config, batches=2, weightings=weightings)


def test_cli_diagnose_refuses_to_overwrite(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "v"
    out.mkdir()
    (out / "variance.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "restlit.cli.main", "diagnose", "variance", "--config",
                           str(REPO / "configs" / "tiny-test.yaml"), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "holds a report" in proc.stderr and "--resume" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "variance.json").read_text() == "{}"


@pytest.mark.parametrize("flags", [[], ["--resume", "--overwrite"]])
def test_cli_diagnose_keeps_measured_batches_unless_told(tmp_path, flags):
    import subprocess
    import sys

    out = tmp_path / "v"
    (out / "batches").mkdir(parents=True)
    (out / "batches" / "batch-00000.pt").write_bytes(b"measured")
    proc = subprocess.run([sys.executable, "-m", "restlit.cli.main", "diagnose", "variance", "--config",
                           str(REPO / "configs" / "tiny-test.yaml"), "-o", str(out), *flags],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ("holds 1 measured batch;" if not flags else "give one") in proc.stderr
    assert (out / "batches" / "batch-00000.pt").read_bytes() == b"measured"


@pytest.mark.parametrize("shard", ["2/2", "a/2", "1", "0/2 --overwrite"])
def test_cli_diagnose_names_a_bad_shard_in_one_line(tmp_path, shard):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "restlit.cli.main", "diagnose", "variance", "--config",
                           str(REPO / "configs" / "tiny-test.yaml"), "-o", str(tmp_path / "v"), "--shard",
                           *shard.split()], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "--shard" in proc.stderr and not (tmp_path / "v").exists()


def test_cli_diagnose_names_a_bad_weighting_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "restlit.cli.main", "diagnose", "variance", "--config",
                           str(REPO / "configs" / "tiny-test.yaml"), "-o", str(tmp_path / "v"), "--weightings", "bogus"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--weightings" in proc.stderr and "bogus" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_report_prompt_by_prompt_by_hand():
    """Two batches of two prompts, one dimension. Uniform: prompt 0 draws 1 then 3 (variance 2),
    prompt 1 draws 0 twice (no spread). Entropy: prompt 0 draws 1 then 2 (variance 1/2), prompt 1
    draws 0 then 1 (1/2). Shares: uniform 100% / 0%, entropy 50% / 50%; per-prompt ratios 1/4 and
    inf; a prompt with no spread under either weighting has no ratio (nan, "-" in the table)."""
    from restlit.experiments.variance import _prompt_table, variance_report

    def batches(*per_prompt):  # per_prompt[p][k] -> per batch k a [P, 1] tensor
        return [torch.tensor([[p[k]] for p in per_prompt], dtype=torch.float64) for k in range(2)]

    parts = {"uniform": batches((1.0, 3.0), (0.0, 0.0), (0.0, 0.0)),
             "entropy": batches((1.0, 2.0), (0.0, 1.0), (0.0, 0.0))}
    rows = {m: [x.sum(0) for x in parts[m]] for m in parts}
    bounds = {m: [torch.zeros(NUM_REGIONS + 1, dtype=torch.float64)] * 2 for m in parts}
    report = variance_report(rows, bounds, parts=parts, n_boot=20)
    u, e = report["weightings"]["uniform"]["by_prompt"], report["weightings"]["entropy"]["by_prompt"]
    assert u["prompt_variance"] == pytest.approx([2.0, 0.0, 0.0]) and u["prompt_share"] == pytest.approx([1, 0, 0])
    assert e["prompt_variance"] == pytest.approx([0.5, 0.5, 0.0]) and e["prompt_share"] == pytest.approx([.5, .5, 0])
    assert e["prompt_ratio_to_uniform"][:2] == [0.25, math.inf] and math.isnan(e["prompt_ratio_to_uniform"][2])
    # plain variance of the totals: uniform (1, 3) -> 2; entropy (1, 3) -> 2 as well
    assert report["weightings"]["uniform"]["variance"] == pytest.approx(2.0)
    assert report["weightings"]["entropy"]["variance"] == pytest.approx(2.0)
    lines = _prompt_table(report | {"prompts": ["a", "b", "c"]}, ["uniform", "entropy"])
    assert lines[-3:] == ["| a | 2 (100%) | 0.5 (50%) | 0.25 |", "| b | 0 (0%) | 0.5 (50%) | - |",
                          "| c | 0 (0%) | 0 (0%) | - |"]
