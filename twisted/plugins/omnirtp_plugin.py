"""twistd plugin: ``twistd -n omnirtp --config-file etc/omnirtp.conf``.

Kept tiny on purpose: twistd imports every dropin for ``twistd --help``, so
nothing here reads files or imports the daemon; ``omnirtp.tap`` is imported
only when the ``omnirtp`` subcommand runs.
"""

from twisted.application.service import ServiceMaker

omnirtp = ServiceMaker(
    "omnirtp",
    "omnirtp.tap",
    "rtpengine-compatible RTP media proxy (ng control protocol)",
    "omnirtp",
)
