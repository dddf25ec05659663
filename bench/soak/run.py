"""Load and soak suite: ``make soak``, or ``python bench/soak/run.py [--quick] [--only NAME]``.

A measurement, not a test: it prints figures and writes them as JSON to
``bench/out/soak-<name>.json``; it asserts no timing. The soaks, in the order they run:

- ``checkin``: 1,000 simulated agents on one ``pipenb server`` (SQLite file) for 10 minutes,
  with deployments churned, metrics and checkpoints reported, commands and dashboard reads;
- ``burst``: the same with 5,000 agents for 2 minutes;
- ``pipe``: ``pipenb run`` on a tailing ``files`` input fed by a writer process, a few actions
  and a size-rotated ``file`` output, at full speed for 10 minutes.

``--quick`` shortens every soak to well under a minute of load (for trying it out); ``--only``
picks soaks (``--only pipe``, ``--only checkin,burst``). See ``bench/soak/README.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1] / "tests")]

import checkin  # noqa: E402
import pipe  # noqa: E402
from common import say  # noqa: E402

SOAKS = ["checkin", "burst", "pipe"]


def configs(quick: bool) -> dict[str, object]:
    if quick:
        return {
            "checkin": checkin.Config(
                "checkin", agents=1000, duration=45, period=15, warmup=15, long_poll_agents=20
            ),
            "burst": checkin.Config(
                "burst", agents=5000, duration=45, period=15, warmup=15, procs=2
            ),
            "pipe": pipe.Config(duration=45, warmup=15),
        }
    return {
        "checkin": checkin.Config("checkin", agents=1000, duration=600, warmup=120),
        "burst": checkin.Config("burst", agents=5000, duration=120, warmup=40, procs=2),
        "pipe": pipe.Config(duration=600, warmup=120),
    }


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so every finally: block stops what it started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="each soak under a minute of load")
    ap.add_argument(
        "--only", action="append", default=[], metavar="NAME", help=f"run only: {', '.join(SOAKS)}"
    )
    args = ap.parse_args(argv)
    only = [x.strip() for item in args.only for x in item.split(",") if x.strip()]
    bad = [x for x in only if x not in SOAKS]
    if bad:
        ap.error(f"unknown soak {', '.join(bad)}; choose from {', '.join(SOAKS)}")
    names = [x for x in SOAKS if not only or x in only]
    signal.signal(signal.SIGTERM, _terminate)
    cfgs = configs(args.quick)
    failed = []
    for name in names:
        t = time.monotonic()
        say(f"\n===== soak {name}{' (quick)' if args.quick else ''} =====")
        try:
            if name == "pipe":
                result = pipe.run(cfgs[name])  # type: ignore[arg-type]
                text = pipe.summary(result)
                path = pipe.write(result)
            else:
                result = checkin.run(cfgs[name])  # type: ignore[arg-type]
                text = checkin.summary(result)
                path = checkin.write(result)
        except KeyboardInterrupt:
            say(f"\nsoak {name} interrupted; what it started is stopped")
            return 130
        except Exception as exc:  # one broken soak should not hide the others' figures
            import traceback

            traceback.print_exc()
            failed.append(f"{name}: {exc}")
            continue
        say(f"\n----- soak {name}: summary ({time.monotonic() - t:.0f} s in all) -----")
        say(text)
        say(f"figures written to {os.path.relpath(path)}")
    if failed:
        say("\nfailed: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
