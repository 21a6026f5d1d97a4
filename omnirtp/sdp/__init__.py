"""SDP model (parse/write keeping untouched lines) and the rewrite step."""

from omnirtp.sdp.codecs import CodecOps
from omnirtp.sdp.model import MediaInfo, MediaSection, SDPIncomplete, SessionDescription, inspect
from omnirtp.sdp.rewrite import IcePlan, MediaPlan, SessionPlan, host_candidates, rewrite

__all__ = ["CodecOps", "IcePlan", "MediaInfo", "MediaPlan", "MediaSection", "SDPIncomplete",
           "SessionDescription", "SessionPlan", "host_candidates", "inspect", "rewrite"]
