"""Call recording: pcap files of a call's media (written in the media
plane, :mod:`omnirtp.recording.writer`), the spool directory and metadata
files (control plane, :mod:`omnirtp.recording.spool`), the file format
(:mod:`omnirtp.recording.pcap`) and ``omnirtp-pcap2wav``
(:mod:`omnirtp.recording.pcap2wav`)."""
