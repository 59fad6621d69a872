"""Faults a long run meets: `timeout` ending the whole job, SIGKILL, a failed write. Each run of
the example uses its smallest settings (tests/test_train.py's SMALL)."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from hrm_torchrl import make_env
from hrm_torchrl.dqn import DQNConfig
from hrm_torchrl.runs import Run, load_checkpoint
from test_train import ROOT, SCRIPT, SMALL, _alive, _descendants, run


def test_timeout_ends_the_whole_job_cleanly(tmp_path):
    """`timeout` sends SIGTERM to the whole process group, workers included: the run saves, says
    so and exits 0 (that no process is left and that --resume continues: the tests below)."""
    run_dir = tmp_path / "run"
    done = subprocess.run(["timeout", "--preserve-status", "-s", "TERM", "16", sys.executable,
                           str(SCRIPT), *SMALL, "--frames", "10000000", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SIGTERM: saving a checkpoint" in done.stdout and "stopped at" in done.stdout
    assert "Traceback" not in done.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["frames"] > 0  # (resumed: below)


def test_sigkill_loses_at_most_the_time_since_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *SMALL, "--frames", "10000000", "--eval-every", "1000000",
         "--checkpoint-minutes", "0.02", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    last = run_dir / "checkpoints" / "last.pt"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not (
                last.exists() and load_checkpoint(last)["frames"] >= 256):
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        workers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: only the periodic checkpoint is left
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run_dir / "metrics.csv").exists()  # no evaluation ran: the checkpoint is by time
    frames = load_checkpoint(last)["frames"]
    assert frames >= 256 and not list(run_dir.rglob("*.tmp"))
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)]
    assert list((run_dir / "tmp").glob("nle*"))  # NetHack's directories, left in the run's tmp
    again = run(["--frames", str(frames + 64), "--run-dir", str(run_dir), "--resume"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {last} at {frames} frames" in again.stdout
    assert load_checkpoint(last)["frames"] >= frames + 64
    assert not (run_dir / "tmp").exists()  # emptied at the start, removed at the exit


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    run = Run.open(tmp_path / "run", {"eval_episodes": 8})
    run.save(run.last, {"model": {}, "frames": 1})
    run.log_metrics({"frames": 1, "success_rate": 0.5})

    def disk_full(fd):  # the data went to the temporary file, the disk did not take it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run.save(run.last, {"model": {}, "frames": 2})
    with pytest.raises(OSError, match="No space left"):
        run.log_metrics({"frames": 2, "success_rate": 0.7})
    monkeypatch.undo()
    assert load_checkpoint(run.last)["frames"] == 1
    assert not list(run.path.rglob("*.tmp"))
    assert (run.path / "metrics.csv").read_text() == "frames,success_rate\n1,0.5\n"
    assert DQNConfig.from_dict(load_checkpoint(run.last)["config"]) == run.config


def test_temporary_files_go_to_the_run_by_an_absolute_path(tmp_path, monkeypatch):
    # NetHack moves files into its directory from elsewhere: a relative TMPDIR breaks every maze
    monkeypatch.chdir(tmp_path)
    for name in ("TMPDIR", "RAY_TMPDIR"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    run = Run.open("relative/run", {"eval_episodes": 8})
    (run.path / "tmp" / "nle-left-by-a-killed-run").mkdir(parents=True)
    tmp = run.scope_temporary_files()
    assert tmp.is_absolute() and tmp == (tmp_path / "relative" / "run" / "tmp")
    assert os.environ["TMPDIR"] == tempfile.gettempdir() == str(tmp) and not list(tmp.iterdir())
    maze = make_env("DynamicMaze", num_envs=1, seed=0)  # NetHack starts with it
    assert list(tmp.glob("nle*"))
    maze.close()
