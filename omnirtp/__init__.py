"""omnirtp: an rtpengine-compatible RTP media proxy on Twisted."""

__version__ = "0.1.0"
