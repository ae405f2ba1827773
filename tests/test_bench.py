import json

from hmsa.bench.__main__ import main


def test_bench_writes_figures_and_keeps_others(tmp_path, capsys):
    out = tmp_path / "benchmarks.json"
    out.write_text(json.dumps({"train_images_per_s": {"value": 1.0, "unit": "images/s", "conditions": "x"}}))
    main(["--suite", "data", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures["train_images_per_s"]["value"] == 1.0  # another suite's figure survives
    for key in ("synthcity_images_per_s", "ingest_images_per_s", "ingest_parallel_speedup"):
        assert figures[key]["value"] > 0
    assert "ingest_images_per_s" in capsys.readouterr().out
