"""SDP model (parse/write keeping untouched lines) and the rewrite step."""

from omnirtp.sdp.model import MediaInfo, MediaSection, SDPIncomplete, SessionDescription, inspect

__all__ = ["MediaInfo", "MediaSection", "SDPIncomplete", "SessionDescription", "inspect"]
