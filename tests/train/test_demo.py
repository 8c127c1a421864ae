"""The demo pipeline end to end at toy size: generate, train, evaluate, report; reuse the data."""

import json

from mtdense.cli import main

TOY = [
    "data.generate.n_train=4", "data.generate.n_val=2", "data.generate.size=[64,128]", "data.num_workers=0",
    "model.decoder_channels=16", "stages=[{name: toy, size: [64, 128], epochs: 1, batch_size: 2, lr: 1.0e-3}]",
    "trainer.limit_train_batches=2",
]


def test_demo_generates_trains_evaluates_and_reuses_the_data(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pictures", "2", "--set", *TOY]) == 0
    printed = capsys.readouterr().out
    assert "val mIoU" in printed and "AbsRel" in printed and "wall time" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["abs_rel"] > 0 and metrics["num_images"] == 2 and metrics["wall_s"] > 0
    assert len(list((out / "pictures").glob("*.png"))) == 2
    report = (out / "report.md").read_text()
    assert "mIoU" in report and "val split" in report and "pictures/" in report
    assert (out / "train" / "model.pth").is_file() and (out / "train" / "config.yaml").is_file()

    # Same settings: the city is not generated again.
    meta = out / "data" / "mtdense_synthetic.json"
    frame = next((out / "data" / "leftImg8bit" / "train").rglob("*.png"))
    stamps = meta.stat().st_mtime_ns, frame.stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--pictures", "1", "--set", *TOY]) == 0
    assert (meta.stat().st_mtime_ns, frame.stat().st_mtime_ns) == stamps
