"""The benchmark: timing rule, plan, side-by-side rows and Markdown; `ovdet benchmark --quick` end to end."""

import importlib.util
import io
import json
from pathlib import Path

import pytest

from ovdet.benchmark.measure import timed_runs
from ovdet.benchmark.report import markdown, markers, rows, write_markdown
from ovdet.benchmark.runner import BenchmarkSettings, plan
from ovdet.benchmark.workload import synthetic_images, synthetic_names
from ovdet.cli.main import main


def test_timed_runs_takes_the_median_and_shortens_slow_configurations():
    calls = []
    fast = timed_runs(lambda: calls.append(1), runs=5, warmup=2, slow_call_s=60, slow_runs=1)
    assert fast["runs"] == 5 and len(calls) == 7 and fast["median_s"] >= 0
    calls.clear()  # every call "slow" (> 2 x 0 s): the first call counts, then slow_runs - 1 more
    slow = timed_runs(lambda: calls.append(1), runs=5, warmup=2, slow_call_s=0.0, slow_runs=3)
    assert slow["runs"] == 3 and len(calls) == 3


def test_workload_names_are_distinct_and_images_mix_sizes():
    names = synthetic_names(1203)
    assert len(set(names)) == 1203
    assert len({im.size for im in synthetic_images(4)}) == 4
    with pytest.raises(ValueError, match="at most"):
        synthetic_names(5000)


def test_plan_measures_owlvit_for_vits_only_and_b16_at_batch_1():
    settings = BenchmarkSettings(models=["b32", "b16", "embedded"], batches=[1, 8], queries=[5], precisions=["fp32", "fp32"])
    specs = plan(settings, {m: {"image_size": 768} for m in settings.models})
    keys = {(s["impl"], s["model"], s["batch"]) for s in specs}
    assert ("owlvit", "b32", 8) in keys and ("ovdet", "embedded", 8) in keys
    assert not any(s["model"] == "embedded" and s["impl"] == "owlvit" for s in specs)
    assert not any(s["model"] == "b16" and s["batch"] == 8 for s in specs)
    assert sum(s["impl"] == "ovdet" and s["model"] == "b32" and s["batch"] == 1 for s in specs) == 1  # fp32 deduplicated


def test_plan_pairs_each_vit_and_batch_once_at_the_first_query_count():
    settings = BenchmarkSettings(models=["b32", "embedded"], batches=[1, 8], queries=[5, 1203],
                                 precisions=["fp32", "int8"], paired_rounds=3)  # fmt: skip
    paired = [s for s in plan(settings, {m: {"image_size": 768} for m in settings.models}) if s["impl"] == "paired"]
    # the embedded model has no transformers twin: it is paired against its own torch path, without peers
    assert [(s["model"], s["batch"], s["queries"]) for s in paired] == [("b32", 1, 5), ("b32", 8, 5),
                                                                         ("embedded", 1, 5), ("embedded", 8, 5)]
    assert all(s["precisions"] == ["fp32", "int8"] and s["rounds"] == 3 for s in paired if s["model"] == "b32")
    assert not any(s["impl"] == "paired" for s in plan(BenchmarkSettings(models=["b32"]), {"b32": {"image_size": 768}}))


def test_paired_rounds_time_both_sides_in_turn(tmp_path):
    from ovdet.benchmark.measure import measure_paired
    from ovdet.benchmark.models import save_random_models

    spec = {"model": "tiny", "batch": 1, "queries": 3, "image_size": 64, "warmup": 1, "rounds": 3,
            "precisions": ["fp32"], **save_random_models("tiny", 64, tmp_path)}  # fmt: skip
    paired = measure_paired(spec)["paired"]
    times = paired["times_s"]
    assert set(times) == {"reference", "fp32"} and all(len(t) == 3 and min(t) > 0 for t in times.values())
    ratios = sorted(r / t for r, t in zip(times["reference"], times["fp32"]))
    assert paired["speedup"]["fp32"] == {"median": pytest.approx(ratios[1]), "min": ratios[0], "max": ratios[2]}


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_runtimes_and_peers_are_paired_with_their_outputs_checked(tmp_path, monkeypatch):
    from ovdet.benchmark.measure import measure_paired
    from ovdet.benchmark.models import save_random_models

    monkeypatch.setenv("OVDET_CACHE", str(tmp_path / "cache"))
    spec = {"model": "tiny", "batch": 1, "queries": 3, "image_size": 64, "warmup": 1, "rounds": 2,
            "precisions": ["fp32"], "runtimes": ["torch", "onnxruntime"], "peers": ["onnxruntime"],
            **save_random_models("tiny", 64, tmp_path)}  # fmt: skip
    paired = measure_paired(spec)["paired"]
    assert set(paired["times_s"]) == {"reference", "onnxruntime", "fp32", "fp32/onnxruntime"}
    agreement = paired["agreement"]
    assert max(agreement["onnxruntime"].values()) < 1e-4  # transformers' graph in onnxruntime: relative
    for side in ("fp32", "fp32/onnxruntime"):  # ovdet on the very OwlViT folder: absolute, against the scale
        assert agreement[side]["logits"] <= 1e-4 * agreement[side]["largest"]["logits"]


def _doc():
    result = lambda s, n=5: {"median_s": s, "runs": n, "times_s": [s] * n}  # noqa: E731
    configs = [
        {"spec": {"impl": "owlvit", "model": "b32", "batch": 1, "queries": 5, "precision": "fp32"},
         "result": {"full": result(0.8), "peak_rss_mb": 1500}},
        {"spec": {"impl": "ovdet", "model": "b32", "batch": 1, "queries": 5, "precision": "bf16", "cold": True},
         "result": {"precision": "bf16", "cold": result(0.4), "cached": result(0.2), "peak_rss_mb": 1200,
                    "backbone": {**result(0.15), "flops": 60e9, "flops_per_s": 400e9}}},
        {"spec": {"impl": "ovdet", "model": "b32", "batch": 1, "queries": 5, "precision": "fp32", "cold": False},
         "result": {"precision": "fp32", "cached": result(0.7), "peak_rss_mb": 1100}},
        {"spec": {"impl": "owlvit", "model": "b32", "batch": 1, "queries": 1203, "precision": "fp32"},
         "result": {"error": ["MemoryError"]}},
        {"spec": {"impl": "paired", "model": "b32", "batch": 1, "queries": 5, "precision": "bf16"},
         "result": {"paired": {"rounds": 3, "times_s": {}, "speedup": {"bf16": {"median": 4.5, "min": 4.2, "max": 4.9}}}}},
    ]  # fmt: skip
    return {
        "settings": {"runs": 5, "slow_call_s": 8.0}, "configs": configs, "onnx": {},
        "gemm": {"fp32": {"flops_per_s": 150e9, "size": 2048}, "bf16": {"flops_per_s": 500e9, "size": 2048}},
        "machine": {"cpu": "test cpu", "threads": 2, "torch": "x", "transformers": "y", "torch_cpu_capability": "AVX512",
                    "cpu_bf16_flags": ["avx512_bf16"], "bf16_supported": True, "load_average": [0.1, 0.1, 0.1]},
    }  # fmt: skip


def test_rows_put_implementations_side_by_side():
    row = rows(_doc())[0]
    assert row["owlvit_ips"] == pytest.approx(1.25) and row["cached_ips"] == pytest.approx(5.0)
    assert row["speedup_cached"] == pytest.approx(4.0) and row["speedup_cold"] == pytest.approx(2.0)
    assert row["fp32_ips"] == pytest.approx(1 / 0.7) and row["backbone_fraction"] == pytest.approx(0.8)


def test_markdown_section_is_replaced_in_place(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    start, end = markers()
    doc.write_text(f"# Performance\n\nintro\n\n{start}\nstale table\n{end}\n\n## Notes\nkept\n")
    section = markdown(_doc(), "ovdet benchmark --runs 5")
    write_markdown(doc, section)
    write_markdown(doc, section)
    write_markdown(doc, markdown(_doc(), "ovdet benchmark --compile", "compile"), "compile")  # its own section
    text = doc.read_text()
    assert text.count(start) == 1 and "stale table" not in text and "kept" in text and "intro" in text
    assert text.count(markers("compile")[0]) == 1 and "--compile" in text
    assert "| b32 | 1 | 5 | 1.25 |" in text and "4.0x" in text
    assert "5 queries, ovdet vs OwlViT: 4.00x (target >= 5.0x): NOT met, short by 1.00x" in text
    assert "fp32, B/32 batch 1, 5 queries, ovdet vs OwlViT: 1.14x (target >= 1.1x): met" in text
    assert "Error in b32/b1/q1203" in text
    assert "Paired in one process, 3 rounds in turn, b32 batch 1, 5 queries, ovdet (cached text) vs OwlViT: bf16 4.50x (4.20-4.90)" in text


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "PERF.md"
    assert main(["benchmark", "--quick", "--onnx", "tiny", "--paired", "2", "--out", str(out), "--markdown", str(md)]) == 0
    doc = json.loads(out.read_text())
    assert {c["spec"]["impl"] for c in doc["configs"]} == {"owlvit", "ovdet", "onnxruntime", "paired"}
    assert "--paired 2" in doc["command"] and "Paired in one process, 2 rounds" in md.read_text()
    assert max(doc["onnx"]["tiny"]["onnx_check"]["max_abs_diff"].values()) < 1e-4
    assert all("error" not in c["result"] for c in doc["configs"]), doc["configs"]
    assert doc["gemm"]["fp32"]["flops_per_s"] > 0 and doc["command"].startswith("ovdet benchmark --quick")
    table = rows(doc)
    assert {(r["batch"], r["queries"]) for r in table} == {(1, 3), (2, 3)}
    assert all(r["speedup_cached"] > 0 and r["rss_ovdet_mb"] > 0 and r["backbone_gflops"] > 0 and r["ort_ips"] > 0
               for r in table)  # fmt: skip
    assert markers()[0] in md.read_text()


def test_backbone_flops_are_counted_on_every_fast_path(tiny_clip_dir):
    """fp32 SDPA on a CPU and oneDNN's prepacked Linear have no FLOP formula in torch; counts must not drop."""
    import torch

    from ovdet.benchmark.measure import measure_backbone
    from ovdet.models.detector import Detector
    from ovdet.towers.cpu_linear import unpack

    det = Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()
    x, spec = torch.randn(2, 3, 64, 64), {"runs": 1, "warmup": 0, "slow_call_s": 8.0, "slow_runs": 1}
    counts = {}
    for precision in ("fp32", "bf16"):
        det.set_precision(precision)
        counts[precision] = measure_backbone(det, x, spec)["flops"]
    unpack(det.backbone.vision)
    counts["plain"] = measure_backbone(det, x, spec)["flops"]
    assert counts["fp32"] == counts["bf16"] == counts["plain"] > 0  # "plain": aten addmm and bmm, all counted


@pytest.mark.parametrize("args, named", [(["--models", "b99"], "b99"), (["--runs", "0"], "got 0"),
                                         (["--paired", "-1"], "got -1"), (["--precision", "fp64"], "fp64")])
def test_bad_benchmark_options_are_refused_before_measuring(args, named, capsys, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["benchmark", *args, "--out", str(out)]) != 0
    assert named in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("args, named", [
    (["--quick", "--runs", "0"], "--runs must be >= 1, got 0"), (["--runs", "-1"], "--runs must be >= 1, got -1"),
    (["--quick", "--warmup", "-1"], "--warmup must be >= 0"), (["--slow-runs", "0"], "--slow-runs must be >= 1"),
    (["--slow-call-s", "nan"], "--slow-call-s must be"), (["--threads", "0"], "--threads must be >= 1"),
    (["--image-size", "0"], "--image-size must be >= 32"), (["--batch", "1,x"], "'x'"), (["--queries", "0"], "'0'"),
])
def test_every_numeric_benchmark_option_is_checked_first(args, named, capsys, tmp_path):
    """M17: --runs 0 and -1 were accepted (with --quick, silently replaced); each bad value is one line."""
    out = tmp_path / "bench.json"
    assert main(["benchmark", *args, "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and named in err[0] and not out.exists(), err


def test_benchmark_never_replaces_a_users_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text('{"mine": 1}')
    assert main(["benchmark", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out '{out}' exists and was not written by ovdet" in err and out.read_text() == '{"mine": 1}'


def test_saving_the_benchmarked_models_draws_no_progress_bars(tmp_path, capfd):
    """M23: transformers' "Writing model shards" bars were printed for every model the benchmark saved."""
    from ovdet.benchmark.models import save_random_models

    save_random_models("tiny", 64, tmp_path)
    captured = capfd.readouterr()
    assert "Writing model shards" not in captured.out + captured.err


@pytest.mark.parametrize("name", ["benchmark.json", "benchmark_embedded.json", "benchmark_owlv2.json"])
def test_the_terminal_table_fits_120_columns(name):
    """The table of record used to print 250 columns wide; it must fit a 120-column terminal, with the
    numbers themselves still there."""
    from rich.console import Console

    from ovdet.benchmark.report import print_table, rows

    doc = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / name).read_text())
    console = Console(width=120, record=True, file=io.StringIO())
    print_table(doc, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "…" not in text  # no number cut to fit
    first = rows(doc)[0]
    assert first["model"] in text and str(first["batch"]) in text


def test_target_lines_name_each_target_once_when_one_batch_was_measured():
    from ovdet.benchmark.report import target_lines

    row = {"model": "b32", "batch": 1, "queries": 5, "precision": "bf16", "speedup_cached": 4.0, "speedup_fp32": 1.2,
           "backbone_fraction": 0.4, "cached_ips": 4.0, "fp32_ips": 1.2}
    lines = target_lines([row])
    share = [line for line in lines if "backbone share" in line]
    assert share == ["bf16 backbone share of the bf16 GEMM rate, B/32 batch 1: 40.00 % (target >= 60 %): NOT met, "
                     "short by 20.00 %."]
    assert len(lines) == len(set(lines))


def test_paired_lines_name_the_embedded_models_own_reference():
    from ovdet.benchmark.report import paired_lines

    paired = {"rounds": 3, "speedup": {"int8/auto": {"median": 3.0, "min": 2.5, "max": 3.5}}}
    table = [{"model": "embedded", "batch": 8, "queries": 16, "paired": paired},
             {"model": "b32", "batch": 1, "queries": 5, "paired": paired}]
    embedded, b32 = paired_lines(table)
    assert "vs ovdet's torch fp32 path: int8/auto 3.00x (2.50-3.50)" in embedded and "OwlViT" not in embedded
    assert "vs OwlViT" in b32
