"""The zoo corpus (``benchmarks/zoo.py``): what a user of the corpus relies on.

(a) tiny configs trained end to end: ``planned_lr`` is the rate each epoch trained with for a
deterministic schedule (per epoch and per batch), it is absent for ReduceLROnPlateau, and a
validate-every-k run has validation metrics only on its validation epochs;
(b) the committed corpus loads through ``benchmarks._curves`` with >= 1,500 runs and every schedule
family in both splits.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("pandas")


def _tiny(variant: str, **over):
    zoo = pytest.importorskip("benchmarks.zoo")
    fam = zoo.FAMILY_BY_NAME["mlp_iris"]
    cfg = dict(zoo.sample_config(fam, 0))
    sched = zoo.VARIANT_INFO[variant][0]
    cfg.update(schedule=sched, schedule_variant=variant,
               per_batch_schedule=zoo.VARIANT_INFO[variant][1], optimizer="sgd", lr=0.05,
               momentum=0.9, nesterov=False, weight_decay=0.0, batch_size=16, width=16, depth=1,
               dropout=0.0, train_frac=1.0, label_noise=0.1, label_smoothing=0.0, val_every=1,
               budget=12)
    cfg.update(over)
    return cfg


def _by_metric(rec):
    out = defaultdict(dict)
    for epoch, metric, value in rec:
        assert epoch not in out[metric], f"{metric} logged twice at epoch {epoch}"
        out[metric][epoch] = value
    return out


@pytest.mark.parametrize("variant,over", [
    ("multistep_50_75", {}),
    ("onecycle", {"optimizer": "adam", "lr": 0.01}),  # per batch: 6 steps per epoch
])
def test_planned_lr_is_the_rate_trained_with(variant, over):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks.zoo import train_run

    cfg = _tiny(variant, **over)
    rec, summary = train_run(cfg)
    m = _by_metric(rec)
    assert not summary["diverged"] and summary["epochs_run"] == cfg["budget"]
    assert summary["steps_per_epoch"] > 1
    epochs = list(range(1, cfg["budget"] + 1))
    assert sorted(m["planned_lr"]) == epochs and sorted(m["lr"]) == epochs
    assert [m["lr"][e] for e in epochs] == [m["planned_lr"][e] for e in epochs]
    lr = np.array([m["lr"][e] for e in epochs])
    if variant == "multistep_50_75":  # x0.1 at epochs 6 and 9 (0-based steps): 1-based 7 and 10
        np.testing.assert_allclose(lr, [0.05] * 6 + [0.005] * 3 + [0.0005] * 3)
    else:  # OneCycleLR: warm up from max_lr/25 to the peak, then anneal
        assert lr[0] == pytest.approx(0.01 / 25) and lr.max() <= 0.01 and lr[-1] < lr[0]
        assert 0 < int(lr.argmax()) < cfg["budget"] - 1
    for metric in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert sorted(m[metric]) == epochs, metric


def test_plateau_has_no_plan_and_val_every_k():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks.zoo import train_run

    cfg = _tiny("plateau_x0.5_p5", val_every=3, lr=0.3, budget=15)
    rec, summary = train_run(cfg)
    m = _by_metric(rec)
    assert "planned_lr" not in m
    assert sorted(m["train_loss"]) == sorted(m["lr"]) == list(range(1, 16))
    for metric in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert sorted(m[metric]) == [3, 6, 9, 12, 15], metric
    # the scheduler only moves on validation epochs: the rate changes only after one
    lr = [m["lr"][e] for e in range(1, 16)]
    changes = [e for e in range(2, 16) if lr[e - 1] != lr[e - 2]]
    assert all((e - 1) % 3 == 0 for e in changes)


def test_committed_corpus_loads(tmp_path):
    from benchmarks._curves import ZOO_DIR, family, load_zoo, monitors_for, task_split, zoo_configs

    assert (ZOO_DIR / "zoo.csv.gz").exists(), "run python -m benchmarks.zoo (see its docstring)"
    runs = load_zoo(cache_dir=tmp_path)
    cfg = zoo_configs()
    assert len(runs) == len(cfg) >= 1500
    split = task_split("zoo", {r.task for r in runs})
    assert dict(zip(cfg.task, cfg.split, strict=True)) == {t: split[t] for t in cfg.task}
    pairs = {(r.config["schedule"], split[r.task]) for r in runs}
    schedules = set(cfg.schedule)
    assert len(schedules) >= 9
    assert pairs == {(s, sp) for s in schedules for sp in ("tune", "holdout")}
    assert {family(r.task) for r in runs} == set(cfg.family)
    for r in runs[:: max(1, len(runs) // 200)]:
        c = r.config
        assert r.source == "zoo" and family(r.task) == c["family"]
        np.testing.assert_array_equal(r.x, np.arange(c["val_every"], c["budget"] + 1,
                                                     c["val_every"]))
        lr, plan = r.per_epoch["lr"], r.per_epoch.get("planned_lr")
        assert len(lr) == c["budget"]
        if c["schedule"] == "plateau":
            assert plan is None
        else:
            assert np.isfinite(plan).all()
            ran = np.isfinite(lr)
            np.testing.assert_array_equal(lr[ran], plan[ran])
        kinds = [m.kind for m in monitors_for(r)]
        assert kinds == (["loss", "workload"] if c["kind"] == "clf" else ["loss"]) \
            or not np.isfinite(r.metrics["val_loss"]).any()


def test_fresh_schedules_plan_what_trains():
    """The fresh corpus's two schedules: ``planned_lr`` is the rate each epoch trained with, and
    it has the shape a user of those schedules expects."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks.zoo import train_run

    for variant, over in (("warmup_linear", {"optimizer": "adam", "lr": 0.01}), ("poly2", {})):
        cfg = _tiny(variant, **over)
        rec, summary = train_run(cfg)
        m = _by_metric(rec)
        epochs = list(range(1, cfg["budget"] + 1))
        lr = np.array([m["lr"][e] for e in epochs])
        np.testing.assert_array_equal(lr, [m["planned_lr"][e] for e in epochs])
        if variant == "poly2":  # PolynomialLR(total_iters=B, power=2), stepped per epoch
            np.testing.assert_allclose(lr, 0.05 * (1 - np.arange(12) / 12) ** 2, rtol=1e-5)
        else:  # 6 batches per epoch, 72 steps: warm-up over 4 steps, then linear to 0
            assert summary["steps_per_epoch"] == 6
            assert lr[0] == pytest.approx(0.01 / 4)
            np.testing.assert_allclose(lr[1:], 0.01 * (72 - 6 * np.arange(1, 12)) / 68,
                                       rtol=1e-5)


def test_third_fresh_corpus_cyclic_schedules_plan_what_trains():
    """CyclicLR per batch: ``planned_lr`` is the rate each epoch trained with; it stays between
    a tenth of the rate and the rate, rises and falls again, and its peaks shrink."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks.zoo import train_run

    for variant in ("cyclic_triangular2", "cyclic_exp_range"):
        cfg = _tiny(variant, optimizer="adam", lr=0.01, budget=30, batch_size=50)
        rec, summary = train_run(cfg)
        m = _by_metric(rec)
        epochs = list(range(1, cfg["budget"] + 1))
        lr = np.array([m["lr"][e] for e in epochs])
        np.testing.assert_array_equal(lr, [m["planned_lr"][e] for e in epochs])
        assert lr.min() >= 0.001 - 1e-12 and lr.max() <= 0.01 + 1e-12
        assert summary["steps_per_epoch"] == 2  # 90 training samples in batches of 50
        # cycles of a fifth of the 60 steps: up over 3 epochs, down over 3
        first, last = lr[:6].max(), lr[-6:].max()
        assert lr[3] > lr[0] and lr[5] < lr[3] and last < 0.6 * first


def test_second_fresh_corpus_schedules_plan_what_trains():
    """The second fresh corpus's schedule family: ``planned_lr`` is the rate each epoch trained
    with; the inverse square root falls as ``sqrt(warm / step)`` after its warm-up, and the
    linear decay reaches 2% of the rate at the budget."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks.zoo import train_run

    for variant in ("inverse_sqrt", "linear_decay"):
        cfg = _tiny(variant, optimizer="adam", lr=0.01)
        rec, summary = train_run(cfg)
        m = _by_metric(rec)
        epochs = list(range(1, cfg["budget"] + 1))
        lr = np.array([m["lr"][e] for e in epochs])
        np.testing.assert_array_equal(lr, [m["planned_lr"][e] for e in epochs])
        if variant == "linear_decay":  # LinearLR(1 -> 0.02 over the 12 epochs), per epoch
            np.testing.assert_allclose(lr, 0.01 * (1 - 0.98 * np.arange(12) / 12), rtol=1e-5)
        else:  # 72 steps, warm-up over int(0.05 * 72) = 3 of them, per batch
            assert summary["steps_per_epoch"] == 6
            step = 6 * np.arange(1, 12)
            np.testing.assert_allclose(lr[1:], 0.01 * np.sqrt(3 / (step + 1)), rtol=1e-5)


def _fresh(corpus):
    """(families, seed, variants, configs, directory, new variants) of a fresh corpus."""
    from benchmarks import _curves, zoo

    return {"fresh": (zoo.FRESH_FAMILIES, zoo.FRESH_SEED, zoo.FRESH_VARIANTS, zoo.fresh_configs,
                      _curves.FRESH_DIR, {"warmup_linear", "poly2"}),
            "fresh2": (zoo.FRESH2_FAMILIES, zoo.FRESH2_SEED, zoo.FRESH2_VARIANTS,
                       zoo.fresh2_configs, _curves.FRESH2_DIR, {"inverse_sqrt", "linear_decay"}),
            "fresh3": (zoo.FRESH3_FAMILIES, zoo.FRESH3_SEED, zoo.FRESH3_VARIANTS,
                       zoo.fresh3_configs, _curves.FRESH3_DIR,
                       {"cyclic_triangular2", "cyclic_exp_range"})}[corpus]


@pytest.mark.parametrize("corpus", ["fresh", "fresh2", "fresh3"])
def test_fresh_families_train(corpus):
    """Every fresh architecture trains on its dataset: finite losses at every epoch, accuracy
    for classification only, and the autoencoder's targets are its inputs."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from benchmarks import zoo

    families, seed, variants, *_ = _fresh(corpus)
    for fam in families:
        cfg = zoo.sample_config(fam, 0, seed, families=families, variant_table=variants,
                                split=corpus)
        cfg.update(budget=3, val_every=1, width=16, batch_size=64, train_frac=0.5,
                   schedule="constant", schedule_variant="constant", per_batch_schedule=False)
        rec, summary = zoo.train_run(cfg)
        m = _by_metric(rec)
        assert not summary["diverged"], fam.name
        for metric in ("train_loss", "val_loss", "test_loss"):
            assert sorted(m[metric]) == [1, 2, 3], (fam.name, metric)
        assert ("val_acc" in m) == (fam.kind == "clf"), fam.name
    if corpus == "fresh":
        cfg = zoo.sample_config(zoo.FRESH_FAMILIES[-1], 0, seed, families=families,
                                variant_table=variants, split=corpus)
        d = zoo.split_data({**cfg, "seed": 1})
        assert cfg["dataset"] == "digits_ae" and d["out_dim"] == d["in_dim"] == 64
        assert d["ytr"].equal(d["Xtr"])


@pytest.mark.parametrize("corpus", ["fresh", "fresh2", "fresh3"])
def test_fresh_corpus_loads(corpus, tmp_path):
    """A committed fresh corpus: its own families (none of the other corpora's), all in its own
    split, with the schedules the main corpus lacks."""
    from benchmarks import _curves, zoo

    families, _, _, configs, where, new = _fresh(corpus)
    runs = _curves.load_zoo(where, cache_dir=tmp_path)
    assert len(runs) == sum(f.runs for f in families) >= 500
    assert {r.config["split"] for r in runs} == {corpus}
    fams = {r.config["family"] for r in runs}
    assert fams == {f.name for f in families}
    others = {f.name for f in (*zoo.FAMILIES, *zoo.FRESH_FAMILIES, *zoo.FRESH2_FAMILIES,
                               *zoo.FRESH3_FAMILIES)
              if f not in families}
    assert not fams & others
    assert new <= {r.config["schedule_variant"] for r in runs}
    assert [r.run_id for r in runs] == [c["run_id"] for c in configs()]
