"""tests/fakes.run_cmd, the launcher of the recipe tests' subprocesses: output captured, a
timeout scaled by PSR_TEST_TIMEOUT_SCALE, and on timeout the whole process group killed (a
torchrun's ranks would otherwise keep running and slow down every later test)."""

import sys
import time

import pytest

from fakes import run_cmd

# a launcher that starts a worker in its own process group (as torchrun does), then both hang
HANGS = """
import subprocess, sys, time
w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(w.pid))
time.sleep(600)
"""


def _gone(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()  # killed, not yet reaped
    except FileNotFoundError:
        return True


def test_output_and_return_code_are_captured():
    r = run_cmd([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], 120)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_a_hung_command_fails_the_test_and_its_whole_process_group_is_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("PSR_TEST_TIMEOUT_SCALE", "0.5")
    pid_file = tmp_path / "worker.pid"
    t0 = time.monotonic()
    # 8 s: time for the launcher to start its worker even on a busy machine
    with pytest.raises(pytest.fail.Exception, match=r"did not finish within 8 s \(timeout 16 s x PSR_TEST_TIMEOUT_SCALE\)"):
        run_cmd([sys.executable, "-c", HANGS, str(pid_file)], 16)
    assert time.monotonic() - t0 < 60  # the 600 s sleeps were cut short
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker), f"worker {worker} outlived its launcher's timeout"
