"""`POST /v1/files` validates in child processes of the API (tuneforge/app/files/validation.py): they run
niced, and they end with the API process, however it ends (they used to outlive it, idle, forever)."""

from __future__ import annotations

import signal

import httpx
import psutil
import pytest

from tests.helpers import TMP, free_port, make_key, shakespeare_rows, spawn, stop, upload_jsonl, wait_http


def _validation_children(api: psutil.Process) -> list[psutil.Process]:
    return [c for c in api.children(recursive=True) if "multiprocessing.spawn" in " ".join(c.cmdline())]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_validation_processes_end_with_the_api(how: signal.Signals) -> None:
    port = free_port()
    proc = spawn(["api", "--port", str(port), "--no-reconciler"], log=TMP / f"api-validation-{how.name}.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {make_key('acme')}"}) as http:
            assert upload_jsonl(http, shakespeare_rows(4))["status"] == "processed"
        children = _validation_children(psutil.Process(proc.pid))
        assert children, "the upload was validated in a child process"
        assert all(c.nice() == 10 for c in children)
        proc.send_signal(how)
        proc.wait(timeout=60)
        # Each gets SIGTERM from the kernel when its parent ends; one still there 30 s later is a leak.
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [c.pid for c in alive]
    finally:
        stop(proc)
