"""log-level (syslog 0-7, as rtpengine) applied to twisted.logger."""

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogPublisher)


def level_for(log_level):
    """Map rtpengine's syslog-style log-level to a twisted LogLevel."""
    if log_level <= 2:
        return LogLevel.critical
    if log_level == 3:
        return LogLevel.error
    if log_level == 4:
        return LogLevel.warn
    if log_level <= 6:
        return LogLevel.info
    return LogLevel.debug


def install_level(log_level, publisher=globalLogPublisher):
    """Filter what reaches the publisher's current observers.

    Called once the daemon starts (twistd installs its observers after
    makeService).  twisted.logger has no public way to list a publisher's
    observers, so this reads ``_observers`` where it exists and otherwise
    leaves logging unfiltered.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=level_for(log_level))
    observers = list(getattr(publisher, "_observers", ()))
    for obs in observers:
        if isinstance(obs, FilteringLogObserver):
            continue
        publisher.removeObserver(obs)
        publisher.addObserver(FilteringLogObserver(obs, [predicate]))
    return predicate
