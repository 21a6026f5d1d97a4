"""The SRTP transform factory (``ITransformFactory``, kind ``"srtp"``)."""

from omnirtp.media.srtp import SrtpFactory

srtp = SrtpFactory()
