"""The G.722 codec (``ICodecFactory``): libspandsp, else the g722 package."""

from omnirtp.codecs.g722 import g722

__all__ = ["g722"]
