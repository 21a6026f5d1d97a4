"""The Opus codec (``ICodecFactory``) through libopus."""

from omnirtp.codecs.opus import opus

__all__ = ["opus"]
