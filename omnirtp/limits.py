"""The open files limit (RLIMIT_NOFILE) that the media port ranges need.

Every media port of a call is a bound socket, and a port that carries media
gets a connected companion socket as well: up to two files per port.  A
process that reaches its limit cannot bind the next call's ports (the
request is answered ``Ran out of ports``).  At start the daemon raises its
own limit towards what its port ranges need, as rtpengine raises its own;
the hard limit only with CAP_SYS_RESOURCE (root outside a container),
never beyond ``fs.nr_open``.  Media workers (``num-threads`` > 0) inherit
the limit; each binds only its slice of the ranges.
"""

import resource as _resource

#: files a process needs besides its media sockets (ng and operator
#: listeners, log, worker pipes, libraries)
SPARE = 256
#: files per media port: its socket and, once media flows, its companion
PER_PORT = 2
#: files an answered two-party call holds: 2 streams x RTP + RTCP ports,
#: idle (no media yet) and carrying media (with companions)
FILES_IDLE_CALL = 4
FILES_ACTIVE_CALL = 4 * PER_PORT

NR_OPEN = "/proc/sys/fs/nr_open"


def files_needed(interfaces, workers=0):
    """Open files one process needs for ``interfaces`` (``{address:
    (port_min, port_max)}``): every port bound with its companion, plus
    :data:`SPARE`.  With ``workers`` > 0 each worker binds a slice of
    every range: the figure is per worker."""
    ports = sum(hi - lo + 1 for lo, hi in interfaces.values())
    if workers > 0:
        ports = -(-ports // workers)
    return ports * PER_PORT + SPARE


def soft_limit(resource=_resource):
    """This process's open files limit now (soft)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _nr_open(path=NR_OPEN):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def raise_file_limit(needed, resource=_resource, nr_open=_nr_open):
    """Raise this process's RLIMIT_NOFILE towards ``needed``; never lower it.

    The hard limit is raised first when it is below ``needed`` (up to
    ``fs.nr_open``; refused without CAP_SYS_RESOURCE), then the soft limit
    as far as the hard one allows.  Returns ``(soft, hard)`` in force
    afterwards."""
    kind = resource.RLIMIT_NOFILE
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(kind)
    if soft == infinity or soft >= needed:
        return soft, hard
    if hard != infinity and hard < needed:
        ceiling = nr_open()
        want = needed if ceiling is None else min(needed, ceiling)
        if want > hard:
            try:
                resource.setrlimit(kind, (want, want))
                return want, want
            except (ValueError, OSError):
                pass  # not allowed: the soft limit up to the hard one below
    want = needed if hard == infinity else min(needed, hard)
    if want > soft:
        try:
            resource.setrlimit(kind, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def apply(interfaces, workers=0, resource=_resource, nr_open=_nr_open):
    """Raise the limit for ``interfaces`` and ``workers`` (as
    :func:`files_needed`); returns ``(summary, warning)``: a few words for
    the start-up line, and a sentence for the log when the limit stays
    below what the ranges need (else None)."""
    needed = files_needed(interfaces, workers)
    soft, hard = raise_file_limit(needed, resource, nr_open)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return "open files %s" % ("unlimited" if soft == resource.RLIM_INFINITY else soft), None
    per = "per media worker " if workers > 0 else ""
    usable = max(0, soft - SPARE)
    warning = (
        "open files limit %d %s(hard limit %s) is below the %d the port ranges need "
        "(%d files per port: socket and companion): at most about %d answered calls "
        "with media (%d idle) before offers get 'Ran out of ports'; raise LimitNOFILE "
        "(systemd) or ulimit -n, or grant CAP_SYS_RESOURCE"
        % (soft, per, "unlimited" if hard == resource.RLIM_INFINITY else hard, needed,
           PER_PORT, usable // FILES_ACTIVE_CALL * max(1, workers),
           usable // FILES_IDLE_CALL * max(1, workers)))
    return "open files %d of %d needed" % (soft, needed), warning
