"""A SIGPROF sampler for the daemons of bench/setup.py --sample (not omnirtp).

bench/setup.py puts this directory on the PYTHONPATH of the omnirtp daemons
it starts (Python imports ``sitecustomize`` at start-up, and media workers
inherit the environment) with ``OMNIRTP_SAMPLE`` set to a path prefix.
Every 0.5 ms of the process's CPU time (in practice every kernel tick, 4 ms
here) the running Python stack is counted, but only while the file
``PREFIX.on`` exists; when it goes away (seen at the next tick: an idle
process may not see it) and when the process exits, the counts so far (of
every sampled phase) are written to ``PREFIX.PID.txt``, one collapsed
stack (``outer;...;inner count``) a line.  bench/sample_report.py reads them.
"""

import atexit
import os

_PREFIX = os.environ.get("OMNIRTP_SAMPLE")

if _PREFIX:
    import collections
    import signal

    _counts = collections.Counter()
    _state = {"on": False}
    _SWITCH = _PREFIX + ".on"

    def _where(code, line):
        name = code.co_filename
        cut = name.rfind("site-packages/")
        if cut >= 0:
            name = name[cut + len("site-packages/"):]
        else:
            cut = name.rfind("/omnirtp/")
            if cut >= 0:
                name = name[cut + 1:]
        return "%s (%s:%d)" % (code.co_name, name, line or 0)

    def _dump():
        if not _counts:
            return
        with open("%s.%d.txt" % (_PREFIX, os.getpid()), "w") as f:
            for stack, n in _counts.items():
                f.write("%s %d\n" % (stack.replace("\n", " "), n))

    def _tick(signum, frame):
        try:
            on = os.path.exists(_SWITCH)
            if on != _state["on"]:
                _state["on"] = on
                if not on:
                    _dump()
            if not on or frame is None:
                return
            parts = []
            f = frame
            while f is not None:
                parts.append(_where(f.f_code, f.f_lineno if f is frame else f.f_code.co_firstlineno))
                f = f.f_back
            parts.reverse()
            _counts[";".join(parts)] += 1
        except Exception:  # never disturb the daemon
            pass

    def _last():
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        _dump()

    signal.signal(signal.SIGPROF, _tick)
    signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
    atexit.register(_last)
