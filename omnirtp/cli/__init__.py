"""The operator's command line: rtpengine's CLI protocol (``listen-cli``)
and the ``omnirtp-ctl`` client."""
