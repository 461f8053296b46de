"""Run CLI cases in one process under a memory limit, each under a time limit; print one JSON record per case.

Used by tests/test_corruptions.py in a child process: `python -m tests.corrupt_harness CASES.json GIB SECONDS`.
The analysis itself is stubbed to stop right after every input is loaded and checked (exit 0 there), so each
case exercises reading and validating its inputs, not minutes of capture.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def main() -> None:
    cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
    cap = int(float(sys.argv[2]) * 2 ** 30)
    seconds = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from reportgen import analyze
    from reportgen.cli import cli

    def stop(*a, **k):
        raise SystemExit(0)  # every input was loaded and checked: the analysis would start here

    analyze.analyze = stop
    signal.signal(signal.SIGALRM, _alarm)
    for case in cases:
        err = io.StringIO()
        start = time.perf_counter()
        signal.alarm(seconds)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli(case["args"])
        except SystemExit as exc:
            code = exc.code or 0
        except _Timeout:
            code = "timeout"
        except MemoryError:
            code = "memory"
        except BaseException as exc:  # anything escaping cli() is a failure of the property
            code = f"escaped {type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
        print(json.dumps({"name": case["name"], "code": code, "stderr": err.getvalue(),
                          "seconds": round(time.perf_counter() - start, 2)}), flush=True)


if __name__ == "__main__":
    main()
