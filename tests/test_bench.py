"""`evalkit bench` through the CLI: the tiny fixture config with random weights, a workload small
enough to run in seconds, the printed table and the --json figures; user mistakes are one line.
The real-size config is only built on the meta device (9.6B parameters are not allocated)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from conftest import REPO, TINY_CKPT

from evalkit.cli import main

REAL_CONFIG_FILE = REPO / "benchmarks" / "configs" / "qwen_vl_real.json"  # the real qwen.tiktoken lies beside it
# pinned to fp32 on the CPU: bench's defaults are cuda + bf16 wherever a GPU is (tests/test_gpu.py covers that)
SMALL = ["--requests", "8", "--images", "4", "--baseline-requests", "4", "--baseline-batch-sizes", "2",
         "--device", "cpu", "--dtype", "fp32"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> tuple[str, dict]:
    path = tmp_path_factory.mktemp("bench") / "figures.json"
    code, out, err = run_cli(["bench", "--config", str(TINY_CKPT), *SMALL, "--json", str(path)])
    assert code == 0, err
    return out, json.loads(path.read_text())


def test_bench_prints_the_table(tiny_bench):
    out, figures = tiny_bench
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    for name in ("engine", "generate() batch 1", "hardware limit"):
        assert name in rows, out
    best = f"generate() best (batch {figures['generate_best']['batch_size']})"
    assert best in rows
    ratio = float(rows["generate() batch 1"].split()[-1].rstrip("x"))
    assert ratio == pytest.approx(figures["speedup_vs_batch1"], abs=0.006)
    assert "outputs equal to the engine's on 100% of them" in out
    assert re.search(r"engine time: vision [\d.]+s \(4 images\), prefill [\d.]+s", out)
    assert re.search(r"engine decode at batch 1: [\d.]+ ms/step", out)


def test_bench_json_figures(tiny_bench):
    _, r = tiny_bench
    engine, batch1, best = r["engine"], r["generate_batch1"], r["generate_best"]
    assert engine["requests"] == 8 and engine["images_encoded"] == 4  # each image once
    assert engine["generated_tokens"] == 8 * 10  # min_new_tokens = max_new_tokens = 10
    assert engine["samples_per_s"] == pytest.approx(8 / engine["seconds"])
    assert engine["tokens_per_s"] == pytest.approx(80 / engine["seconds"])
    assert engine["prompt_tokens"] <= engine["padded_prompt_tokens"]
    assert 0 < engine["vision_s"] + engine["prefill_s"] + engine["decode_s"] <= engine["seconds"]
    assert engine["peak_memory_gib"] > 0
    assert batch1["batch_size"] == 1 and batch1["requests"] == 4
    assert [g["batch_size"] for g in r["generate_all"]] == [1, 2]
    assert best == max(r["generate_all"], key=lambda g: g["samples_per_s"])
    assert r["speedup_vs_batch1"] == pytest.approx(engine["samples_per_s"] / batch1["samples_per_s"])
    assert r["speedup_vs_best"] == pytest.approx(engine["samples_per_s"] / best["samples_per_s"])
    assert r["outputs_agree_with_generate"] == 1.0
    assert r["device"].startswith("cpu") and r["dtype"] == "float32"
    assert r["config"]["requests"] == 8 and r["config"]["images"] == 4 and r["config"]["weights"] == "random"
    assert r["hardware"]["matmul_tflops"] > 0 and r["hardware"]["bandwidth_gb_s"] > 0
    limit = r["limit"]
    assert 0 < limit["achieved_fraction"] < 1  # nothing beats the hardware limit
    assert limit["samples_per_s"] > engine["samples_per_s"]
    decode = r["engine_batch1_decode"]
    assert decode["requests"] == 3 and 0 < decode["fraction"] < 1


@pytest.mark.parametrize("argv,message", [
    (["--model", "llava:/nowhere"], "bench measures qwen-vl:PATH models"),
    (["--model", "qwen-vl:/nowhere"], "not a checkpoint directory"),
    (["--config", "/nowhere/config.json"], "no such config file"),
    ([], "bench needs --model qwen-vl:PATH or --config"),
    (["--config", str(TINY_CKPT), "--batch-size", "many"], "batch sizes are positive integers"),
    (["--config", str(TINY_CKPT), "--baseline-batch-sizes", "0"], "at least 1"),
    (["--config", str(TINY_CKPT), "--dtype", "int3"], "unknown dtype"),
    (["--config", str(TINY_CKPT / "qwen.tiktoken")], "not a Qwen-VL config.json"),
    (["--config", str(REAL_CONFIG_FILE), "--dry-run", "--compile"], "--compile has no effect with --dry-run"),
])
def test_bench_user_errors_are_one_line(argv, message):
    code, out, err = run_cli(["bench", *argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("evalkit: error:") and message in err, err


def test_real_size_config_builds_on_the_meta_device():
    code, out, err = run_cli(["bench", "--config", str(REAL_CONFIG_FILE), "--dry-run", "--dtype", "bf16"])
    assert code == 0, err
    counts = {k: float(v) for k, v in re.findall(r"(vision|adapter|llm|total) ([\d.]+)B", out)}
    # the paper's Table 1: ViT 1.9B, adapter 0.08B, LLM 7.7B, 9.6B in all
    assert counts["vision"] == pytest.approx(1.9, abs=0.05) and counts["adapter"] == pytest.approx(0.08, abs=0.005)
    assert counts["llm"] == pytest.approx(7.7, abs=0.05) and counts["total"] == pytest.approx(9.6, abs=0.1)
    assert "18.0 GiB of weights in bfloat16" in out


def test_small_cpu_config_is_the_issue_shape():
    config = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "small_cpu.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"]) == (512, 4, 8, 2816, 151936)
    assert (config["visual"]["width"], config["visual"]["layers"], config["visual"]["image_size"]) == (256, 4, 448)
    assert config["visual"]["output_dim"] == config["hidden_size"]


@pytest.mark.parametrize("source", [["--model", f"qwen-vl:{TINY_CKPT}"], ["--config", str(TINY_CKPT)]])
def test_compile_reaches_the_engine_and_not_the_baselines(source, monkeypatch, tmp_path, compile_calls):
    """`--compile` takes effect with --model as with --config (it was set after the engine was
    built), and the generate() baselines run the model uncompiled. torch.compile is replaced by a
    wrapper that counts calls, so no compiler runs."""

    from evalkit.models.qwen_vl import bench

    calls = compile_calls
    phases: dict[str, int] = {}

    def counting(name, fn):
        def run(*args, **kwargs):
            before = calls["compiled"]
            out = fn(*args, **kwargs)
            phases[name] = calls["compiled"] - before
            return out
        return run

    monkeypatch.setattr(bench, "run_engine", counting("engine", bench.run_engine))
    monkeypatch.setattr(bench, "run_baselines", counting("baselines", bench.run_baselines))
    path = tmp_path / "figures.json"
    code, out, err = run_cli(["bench", *source, *SMALL, "--compile", "--json", str(path)])
    assert code == 0, err
    assert phases["engine"] > 0 and phases["baselines"] == 0
    figures = json.loads(path.read_text())
    assert figures["config"]["compile"] is True and figures["outputs_agree_with_generate"] == 1.0


def test_bench_tasks_times_the_run_pipeline_next_to_the_engine(tmp_path):
    """--tasks: the benchmark fixture's real-size JPEGs (benchmarks/data, hub VQAv2 schema) through
    `evalkit run`'s pipeline and through the engine alone, the same requests, split by phase."""
    path = tmp_path / "figures.json"
    code, out, err = run_cli(["bench", "--config", str(TINY_CKPT), "--tasks", "vqav2_val", "--data-dir",
                              str(REPO / "benchmarks" / "data"), "--requests", "6", "--no-baseline",
                              "--device", "cpu", "--dtype", "fp32", "--pipeline-batch-sizes", "3",
                              "--pipeline-rounds", "2", "--json", str(path)])
    assert code == 0, err
    r = json.loads(path.read_text())
    engine, pipeline = r["engine"], r["pipeline"]
    auto, fixed = pipeline["runs"]
    assert engine["requests"] == auto["requests"] == fixed["requests"] == 6
    assert auto["errors"] == fixed["errors"] == 0
    assert (auto["batch_size"], fixed["batch_size"]) == ("auto", 3)
    assert auto["engine_batch_size"] == 6 and fixed["engine_batch_size"] == 3  # auto: all 6 in one call and batch
    assert auto["images_encoded"] == fixed["images_encoded"] == engine["images_encoded"] == 2  # 3 questions each
    for run in (auto, fixed):
        phases = sum(run[f"{p}_s"] for p in ("data", "prompts", "model", "save", "score"))
        assert run["data_s"] > 0 and run["model_s"] > 0 and run["score_s"] > 0
        assert phases + run["other_s"] == pytest.approx(run["seconds"]) and run["other_s"] >= 0
    assert pipeline["rounds"] == 2 and len(pipeline["engine_alone_seconds"]) == 2  # interleaved, medians kept
    assert pipeline["engine_alone_seconds"][0] == engine["seconds"]
    alone = min(pipeline["engine_alone_seconds"])  # the lower median of two
    assert pipeline["pipeline_over_engine"] == pytest.approx(auto["seconds"] / alone - 1)
    assert re.search(r"evalkit run pipeline \(batch auto\): [\d.]+ samples/s, [\d.]+s for 6 requests vs engine "
                     r"alone [\d.]+s \([+-][\d.]+%\)", out)
    assert "where the pipeline's time goes: data" in out and "pipeline by --batch-size: auto" in out


def test_benchmark_fixture_is_real_size_and_small():
    """100 640x480 JPEGs under 256 questions, committed: it must stay small."""
    import datasets

    file = REPO / "benchmarks" / "data" / "lmms-lab-encoder" / "VQAv2" / "data" / "validation-00000-of-00001.parquet"
    assert file.stat().st_size < 5e6
    rows = datasets.load_dataset("parquet", data_files=str(file), split="train")
    assert len(rows) == 256 and len(set(rows["image_id"])) == 100
    assert rows[0]["image"].size == (640, 480) and rows[0]["image"].format == "JPEG"
