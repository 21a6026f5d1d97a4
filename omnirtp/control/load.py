"""New calls refused under load: ``max-load``, ``max-cpu``, ``max-bandwidth``;
and the relay's rates (packets, bytes and errors per second).

rtpengine 10.5 keeps the three limits in its own units, and so does
:class:`LoadLimits`, so that what an operator sets reads back and compares
as it does there: the load average and the CPU share in hundredths
(``max-load = 1.5`` is 150, ``max-cpu = 80`` is 8000; a value is truncated
to a whole hundredth, and one below 0.01 is 0: no limit), the bandwidth in
bytes per second.  A limit of 0 is off.  A new call (an offer for an
unknown call-id, after ``max-sessions``) is refused while a figure is at or
above its limit, checked in this order: load, CPU, bandwidth.

The figures are sampled, not read per request: the 1-minute load average
(``os.getloadavg``) and the whole machine's CPU share since the previous
sample (``/proc/stat``: user + nice + system against those and idle) every
half second while a load or CPU limit is set; the bytes relayed per second
(userspace and kernel) every second while a bandwidth limit is set, from
the engine's totals.  With no limit set nothing is sampled.

:class:`Rates` turns two readings of the engine's totals into the ng
``statistics`` reply's ``packetrate``/``byterate``/``errorrate`` figures
(also ``/metrics``, ``/stats``, the CLI's ``list totals``/``counters``):
over the last second, as rtpengine 10.5 reports them, read by the same
one-second sampler as the bandwidth limit's.  Without a bandwidth limit the
sampler runs only while someone asks: a ``statistics`` request starts it,
and it stops :data:`RATE_LINGER` seconds after the last request, so that a
daemon nobody watches does no per-second work.  A request while it does
not run answers the rates since the previous reading (none: 0).
"""

import os

from twisted.internet import task
from twisted.logger import Logger

from omnirtp.errors import E_SESSION_LIMIT

E_CPU_LIMIT = "CPU usage limit exceeded"
E_LOAD_LIMIT = "Load limit exceeded"
E_BANDWIDTH_LIMIT = "Bandwidth limit exceeded"

#: seconds between samples of the load average and the CPU share
LOAD_INTERVAL = 0.5
#: seconds between samples of the bytes relayed
RATE_INTERVAL = 1.0
#: seconds the rate sampler goes on after the last ``statistics`` request
#: (without a bandwidth limit): longer than a monitor's usual polling
#: interval (Prometheus' default is 60 s), so that each of its requests
#: gets the last second's rates
RATE_LINGER = 150.0
#: a ``statistics`` request sooner than this after the previous reading
#: keeps the rates of that reading (a rate over a few milliseconds says
#: nothing)
RATE_MIN_SPAN = 0.5

PROC_STAT = "/proc/stat"


def hundredths(value):
    """``value`` (a float) as the whole hundredths rtpengine keeps: C's
    conversion of ``value * 100`` to an int (towards zero)."""
    return int(value * 100)


def cpu_times(path=PROC_STAT):
    """``(used, idle)`` clock ticks of the machine from ``path``'s first
    line (``cpu  user nice system idle ...``), or None when it cannot be
    read."""
    try:
        with open(path, "rb") as f:
            fields = f.readline().split()
        if fields[0] != b"cpu":
            return None
        user, nice, system, idle = (int(x) for x in fields[1:5])
    except (OSError, ValueError, IndexError):
        return None
    return user + nice + system, idle


class Rates:
    """Per-second rates from successive readings of the engine's totals
    (``packets``, ``bytes``, ``errors``, ``kernel_packets``,
    ``kernel_bytes``): the ``statistics`` reply's ``*rate*`` keys."""

    KEYS = ("packetrate_user", "byterate_user", "errorrate_user",
            "packetrate_kernel", "byterate_kernel", "errorrate_kernel",
            "packetrate", "byterate", "errorrate")

    def __init__(self):
        self._last = None  # (time, packets, bytes, errors, kpackets, kbytes)
        self.current = dict.fromkeys(self.KEYS, 0)

    def observe(self, totals, now, min_span=RATE_MIN_SPAN):
        """Take a reading; the rates since the previous one (kept when that
        one is less than ``min_span`` seconds old) -> :attr:`current`."""
        get = totals.get
        reading = (now, get("packets", 0), get("bytes", 0), get("errors", 0),
                   get("kernel_packets", 0), get("kernel_bytes", 0))
        last = self._last
        if last is not None:
            span = now - last[0]
            if span < min_span:
                return self.current
            if span > 0:
                # counters only grow; a restarted worker's may start again
                # from 0: no negative rate
                d = [max(0, a - b) for a, b in zip(reading[1:], last[1:])]
                packets, octets, errors, kpackets, kbytes = (int(x / span) for x in d)
                upackets, ubytes = max(0, packets - kpackets), max(0, octets - kbytes)
                self.current = {
                    "packetrate_user": upackets, "byterate_user": ubytes,
                    "errorrate_user": errors,
                    "packetrate_kernel": kpackets, "byterate_kernel": kbytes,
                    # the kernel's failures go to userspace: none of its own
                    "errorrate_kernel": 0,
                    "packetrate": packets, "byterate": octets, "errorrate": errors,
                }
        self._last = reading
        return self.current


class LoadLimits:
    """The three limits, their samplers and the check a new call makes.

    ``clock``: ``callLater``/``seconds`` (the reactor); ``totals``: a
    no-argument callable firing with the engine's totals (``engine.totals``);
    ``loadavg`` and ``stat_path`` are for the tests."""

    log = Logger()

    def __init__(self, clock, totals=None, max_load=0.0, max_cpu=0.0, max_bandwidth=0,
                 loadavg=os.getloadavg, stat_path=PROC_STAT):
        self.clock = clock
        self._totals = totals
        self._loadavg = loadavg
        self._stat_path = stat_path
        self.load_limit = hundredths(max_load or 0.0)
        self.cpu_limit = hundredths(max_cpu or 0.0)
        self.bw_limit = max(0, max_bandwidth or 0)
        #: the last samples: load average x 100, CPU share in hundredths of
        #: a percent (0-10000), bytes relayed per second
        self.load_average = 0
        self.cpu_usage = 0
        self.rates = Rates()
        self._cpu_last = None
        self._load_loop = None
        self._rate_loop = None
        self._started = False
        #: when the last ``statistics`` request read the rates (None: never)
        self._asked_at = None

    # -- the limits ------------------------------------------------------

    @property
    def max_load(self):
        return self.load_limit / 100.0

    @property
    def max_cpu(self):
        return self.cpu_limit / 100.0

    def set_max_load(self, value):
        self.load_limit = hundredths(value)
        self._resample()

    def set_max_cpu(self, value):
        self.cpu_limit = hundredths(value)
        self._resample()

    def set_max_bandwidth(self, value):
        self.bw_limit = max(0, value)
        self._resample()

    def exceeded(self):
        """None, or ``(reason, log line)`` for the first limit reached."""
        if self.load_limit and self.load_average >= self.load_limit:
            return E_LOAD_LIMIT, "Load limit exceeded (%.2f > %.2f)" % (
                self.load_average / 100.0, self.load_limit / 100.0)
        if self.cpu_limit and self.cpu_usage >= self.cpu_limit:
            return E_CPU_LIMIT, "CPU usage limit exceeded (%.1f%% > %.1f%%)" % (
                self.cpu_usage / 100.0, self.cpu_limit / 100.0)
        if self.bw_limit:
            rate = self.rates.current["byterate"]
            if rate >= self.bw_limit:
                return E_BANDWIDTH_LIMIT, "Bandwidth limit exceeded (%d > %d)" % (
                    rate, self.bw_limit)
        return None

    # -- sampling --------------------------------------------------------

    def start(self):
        self._started = True
        self._resample()

    def stop(self):
        self._started = False
        self._resample()

    def _asked(self):
        """True while the rates were asked for within :data:`RATE_LINGER`."""
        return self._asked_at is not None and (
            self.clock.seconds() - self._asked_at <= RATE_LINGER)

    def _resample(self, now=True):
        """Run the samplers that the limits set now (and a recent
        ``statistics`` request) need, and only those."""
        want_load = self._started and bool(self.load_limit or self.cpu_limit)
        want_rate = (self._started and self._totals is not None
                     and bool(self.bw_limit or self._asked()))
        self._load_loop = self._loop(self._load_loop, want_load, self.sample_load,
                                     LOAD_INTERVAL)
        self._rate_loop = self._loop(self._rate_loop, want_rate, self.sample_rates,
                                     RATE_INTERVAL, now)

    def _loop(self, loop, wanted, function, interval, now=True):
        if wanted and loop is None:
            loop = task.LoopingCall(function)
            loop.clock = self.clock
            loop.start(interval, now=now).addErrback(
                lambda f: self.log.failure("load sampler stopped", f))
        elif not wanted and loop is not None:
            if loop.running:
                loop.stop()
            loop = None
            if function == self.sample_load:
                self._cpu_last = None
        return loop

    def sample_load(self):
        if self.load_limit:
            try:
                self.load_average = hundredths(self._loadavg()[0])
            except OSError as e:
                self.log.warn("Failed to obtain load average: {error}", error=str(e))
        if self.cpu_limit:
            times = cpu_times(self._stat_path)
            if times is None:
                self.log.warn("Failed to obtain CPU usage")
                return
            last = self._cpu_last
            self._cpu_last = times
            if last is not None:
                used, idle = times[0] - last[0], times[1] - last[1]
                if used + idle > 0:
                    self.cpu_usage = used * 10000 // (used + idle)

    def sample_rates(self):
        if not self.bw_limit and not self._asked():
            self._resample()  # nobody asked for a while: the sampler stops
            return None
        d = self._totals()

        def got(totals):
            self.rates.observe(totals, self.clock.seconds(), min_span=0)

        def failed(f):
            self.log.failure("relay rates not read", f)
        # a sampler that must not stop: a failed reading keeps the last rates
        d.addCallbacks(got, failed)
        return None

    def statistics_rates(self, totals, now):
        """The rates for a ``statistics`` reply that read ``totals`` now:
        the sampler's (the last second's) while it runs; else those since
        the previous reading (0 for the first), and the sampler starts for
        the next requests."""
        self._asked_at = now
        if self._rate_loop is not None:
            return self.rates.current
        current = self.rates.observe(totals, now)
        self._resample(now=False)  # this reading is its first
        return current


def refusal(limits, log):
    """Raise the :class:`~omnirtp.errors.LoadLimit` for the first of
    ``limits``' limits that a new call meets (and log it), or return."""
    hit = limits.exceeded()
    if hit is None:
        return
    from omnirtp.errors import LoadLimit
    reason, line = hit
    log.warn("{line}", line=line)
    raise LoadLimit(reason, legacy=E_SESSION_LIMIT)
