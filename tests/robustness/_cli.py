"""Running the CLI in-process and checking the error contract (shared by the robustness tests)."""

from __future__ import annotations

import contextlib
import io

from fewstep.cli import main


def run(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``fewstep ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # what `python -m fewstep.cli` turns into a status and a stderr line
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                print(e.code, file=err)
    return code, out.getvalue(), err.getvalue()


def assert_contract(code: int, err: str) -> None:
    """Success, or exactly one stderr line starting ``error:`` (the last one) and a non-zero status; never a
    traceback."""
    assert "Traceback" not in err, err
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error:"), err
        assert sum(line.startswith("error:") for line in lines) == 1, err
