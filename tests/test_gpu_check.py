"""benchmarks/gpu_check.py's bookkeeping on CPU: rows for the planning table and merging them in."""
import csv
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)

TABLE = """# a comment the table keeps
model,img_size,gpu_type,images_per_s,gflops,basis,scaled_from,factor,source
roma_base,192,h200,438.0,28.1329,measured,,,"old measurement, fast scan"
roma_tiny,192,h200,1604.4,7.68,scaled,roma_base@192/h200,3.6631,"FLOPs ratio"
roma_tiny,192,h100,1444.0,7.68,scaled,roma_tiny@192/h200,0.9,"0.9 x H200"
roma_base,192,a100,175.2,28.1329,scaled,roma_base@192/h200,0.4,"0.4 x H200"
"""


def _result(model, scan, ips, counted="registry.pretrain_flops: encoder + decoder forward"):
    return {"model": model, "img_size": 192, "batch": 64, "dtype": "bfloat16", "scan": scan, "gpu": "NVIDIA H200",
            "images_per_s": ips, "peak_mem_gib": 9.0, "train_gflops_per_image": 84.3987, "flops_counted": counted,
            "mfu": 0.1, "loss": 1.0, "torch": "2.11.0+cu130", "date": "2026-12-03"}


def test_table_rows_prefer_the_fused_path(tmp_path):
    out = tmp_path / "h200"
    rows = gc.table_rows([_result("roma_base", "cuda", 1600.0), _result("roma_base", "fast", 440.0),
                          _result("roma_large", "fast", 150.0, counted="registry.encoder_flops: ...")], out)
    assert [(r["model"], r["images_per_s"], r["gpu_type"]) for r in rows] == [("roma_base", 1600.0, "h200"),
                                                                            ("roma_large", 150.0, "h200")]
    assert rows[0]["gflops"] == round(84.3987 / 3, 4) and rows[1]["gflops"] == ""  # only pretraining FLOPs go in
    assert "scan=cuda" in rows[0]["source"] and "data excluded" in rows[0]["source"]
    assert all(r["basis"] == "measured" and set(r) == set(gc.TABLE_COLUMNS) for r in rows)


def test_merge_replaces_the_measurement_and_rescales_what_depends_on_it(tmp_path):
    table = tmp_path / "throughput.csv"
    table.write_text(TABLE)
    rows_csv = tmp_path / "rows.csv"
    new = gc.table_rows([_result("roma_base", "cuda", 1600.0), _result("roma_large", "cuda", 500.0)], tmp_path / "h200")
    with open(rows_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=gc.TABLE_COLUMNS)
        w.writeheader()
        w.writerows(new)
    gc.main(["--merge-rows", str(rows_csv), "--table", str(table)])
    text = table.read_text()
    assert text.startswith("# a comment the table keeps\n")
    got = {(r["model"], r["gpu_type"]): r for r in csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#"))}
    assert got[("roma_base", "h200")]["images_per_s"] == "1600.0" and "scan=cuda" in got[("roma_base", "h200")]["source"]
    assert got[("roma_large", "h200")]["basis"] == "measured"  # a new row
    assert float(got[("roma_tiny", "h200")]["images_per_s"]) == round(3.6631 * 1600, 1)
    assert float(got[("roma_tiny", "h100")]["images_per_s"]) == round(0.9 * round(3.6631 * 1600, 1), 1)  # chained
    assert float(got[("roma_base", "a100")]["images_per_s"]) == 640.0
