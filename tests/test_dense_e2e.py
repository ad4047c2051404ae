"""End to end: run_dense on the real LEVIR-CD samples with a micro encoder, resume, test-split hygiene."""
import json
import math
from dataclasses import replace

import pytest

import roma.eval.dense.train as dense_train
from roma.config import DenseConfig, ModelConfig
from roma.eval.dense import run_dense


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def levir_root(shared_data):
    root = shared_data / "levir_cd_samples"
    if not (root / "A").is_dir():
        pytest.skip(f"LEVIR-CD samples are not at {root}")
    return root


CFG = DenseConfig(task="levir", img_size=32, crop_size=64, scan="uni", max_steps=3, batch_size=2, lr=1e-3,
                  eval_every=1, decoder_channels=(16, 8, 8, 8), slide_stride=64, num_workers=0, warmup_epochs=0.0)
MODEL = ModelConfig(name="roma_micro_tiny", img_size=96, patch_size=8)


def same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN (an undefined ratio, e.g. precision with no change predicted) equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_levir_samples_end_to_end_and_resume(levir_root, tmp_path, monkeypatch):
    calls = []
    real_evaluate = dense_train.evaluate

    def recording(model, scenes, *a, **k):
        calls.append(sorted(sc.name for sc in scenes))
        return real_evaluate(model, scenes, *a, **k)

    monkeypatch.setattr(dense_train, "evaluate", recording)
    cfg = replace(CFG, root=str(levir_root))
    metrics = run_dense(None, cfg, MODEL, tmp_path, "cpu")
    assert set(metrics) == {f"levir_{k}" for k in ("f1", "precision", "recall", "iou", "miou", "mf1", "oa")}
    assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in metrics.values())
    assert 0.0 < metrics["levir_oa"] <= 100.0

    report = json.loads((tmp_path / "dense_levir" / "report.json").read_text())
    val, test = report["splits"]["val"], report["splits"]["test"]
    assert val == ["val_27_0000_0256.png"] and len(test) == 7 and not set(val) & set(test)
    assert report["steps"] == 3 and same(report["metrics"], metrics)
    # every evaluation during training saw the validation scenes; the test scenes exactly once, at the end
    assert calls[:-1] and all(c == val for c in calls[:-1]) and calls[-1] == sorted(test)
    assert (tmp_path / "dense_levir" / "best.pt").is_file() and (tmp_path / "dense_levir" / "last.pt").is_file()

    # a rerun of the same config resumes from last.pt: no more training, the same test numbers
    calls.clear()
    again = run_dense(None, cfg, MODEL, tmp_path, "cpu")
    assert calls == [sorted(test)]
    assert same(again, metrics)


def test_run_dense_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="task"):
        run_dense(None, replace(CFG, task="cityscapes", root=str(tmp_path)), MODEL, tmp_path)
    with pytest.raises(ValueError, match="root is empty"):
        run_dense(None, CFG, MODEL, tmp_path)
    with pytest.raises(FileNotFoundError, match="A/"):
        run_dense(None, replace(CFG, root=str(tmp_path)), MODEL, tmp_path)
