"""The G.711 codecs (``ICodecFactory``): PCMU and PCMA, pure Python."""

from omnirtp.codecs.g711 import pcma, pcmu

__all__ = ["pcma", "pcmu"]
