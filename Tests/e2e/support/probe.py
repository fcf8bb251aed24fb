#!/usr/bin/env python3
"""What a consumer sees of a cache directory over time, as Triton looks a kernel up: stat the kernel's
directory, read its group file, stat each child it names. Run as a script (in a container, or on the host) with
`probe.py DIR KEY GROUP OUT`: it writes its pid to OUT.pid, probes every few milliseconds and appends one JSON line to OUT per change of
outcome ({"t": monotonic seconds, "outcome": "ok" | errno name}); on SIGTERM it writes a summary line
{"summary": {"probes", "failures", "outcomes": {outcome: count}, "failed_for": seconds from the first to the
last failed probe}} and exits. Standard library only: a workload image has no test venv."""
import errno
import json
import os
import signal
import sys
import time

directory, key, group, out_path = sys.argv[1:5]
interval = float(os.environ.get("PROBE_INTERVAL", "0.005"))
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def lookup() -> str:
    try:
        os.stat(os.path.join(directory, key))
        with open(os.path.join(directory, key, group), "rb") as f:
            children = json.loads(f.read())["child_paths"]
        for path in children.values():
            os.stat(path)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except (ValueError, KeyError):
        return "malformed"


with open(out_path + ".pid", "w") as f:
    f.write(str(os.getpid()))
counts: dict[str, int] = {}
first_failure = last_failure = None
previous = None
with open(out_path, "a", buffering=1) as out:
    out.write(json.dumps({"started": time.monotonic()}) + "\n")
    while not stop:
        outcome = lookup()
        now = time.monotonic()
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "ok":
            first_failure = now if first_failure is None else first_failure
            last_failure = now
        if outcome != previous:
            out.write(json.dumps({"t": now, "outcome": outcome}) + "\n")
            previous = outcome
        time.sleep(interval)
    failures = sum(n for o, n in counts.items() if o != "ok")
    out.write(json.dumps({"summary": {
        "probes": sum(counts.values()), "failures": failures, "outcomes": counts,
        "failed_for": (last_failure - first_failure) if first_failure is not None else 0.0}}) + "\n")
