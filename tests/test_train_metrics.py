"""The metrics log survives resumes without duplicates; the loss curve is a PNG."""

from __future__ import annotations

from distill.train.metrics import MetricsLog, plot_loss_curve


def test_resume_drops_rows_after_the_checkpoint_and_plots(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, after_step=0, enabled=True)
    for step in range(1, 7):
        log.write({"step": step, "tokens": 100 * step, "seconds": step, "loss": 5 - step / 2})
        if step % 2 == 0:
            log.write({"step": step, "tokens": 100 * step, "seconds": step, "val_loss": 5 - step / 3, "val_bpb": 2.0})
    MetricsLog(path, after_step=4, enabled=True)  # a resume from the step-4 checkpoint
    assert [r["step"] for r in MetricsLog.read(path)] == [1, 2, 2, 3, 4, 4]
    MetricsLog(path, after_step=0, enabled=False).write({"step": 9})  # other processes write nothing
    assert len(MetricsLog.read(path)) == 6

    plot_loss_curve(MetricsLog.read(path), tmp_path / "loss_curve.png")
    assert (tmp_path / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
