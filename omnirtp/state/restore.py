"""Rebuild the calls of a state store in a starting daemon.

For each kept call: decode its snapshot (``omnirtp.state.snapshot``), bind
exactly the ports its parties were given (``IMediaEngine.claim``), give the
engine the call's forwarding as its last request left it, and put it in the
registry.  A call that cannot be rebuilt (a snapshot from an incompatible
version, an interface no longer configured, a port now taken) is logged and
counted, its ports are released, and it is left in the store untouched.

What carries over: tags, SDPs' outcome (the model), ports, interfaces,
SDES keys (both directions), ICE credentials and candidates, codec state.
DTLS legs relay on with the SRTP keys their handshake exported (kept
by the registry, ``Media.dtls_srtp``), without a new handshake.  The
SRTP contexts go on from where they were last written (the registry's
``Media.srtp_index``: rollover counters and highest indexes, SRTCP
indexes; see docs/scaling.md).  What does not carry over: endpoints
learned from media (re-learned from the next packets, as after a NAT
rebinding), counters, replay windows.
"""

from twisted.internet import defer
from twisted.logger import Logger

from omnirtp.state.snapshot import SnapshotError, decode

log = Logger(namespace="omnirtp.state.restore")


@defer.inlineCallbacks
def bind_call(engine, negotiator, call):
    """Bind exactly the ports ``call``'s parties were given and give the
    engine its forwarding; on failure release what was bound and fail."""
    by_address = {}
    for _ml, m in call.all_medias():
        if m.dtls_srtp is not None:
            # no handshake in this process: relay with the kept keys
            m.dtls_srtp["restored"] = True
        if m.has_ports:
            by_address.setdefault(m.interface.address, []).append(m.rtp_port)
            for address, port in m.ice_bases:
                # ICE's ports on the interface's other addresses
                by_address.setdefault(address, []).append(port)
    try:
        for address, ports in by_address.items():
            yield engine.claim(call.call_id, address, ports)
        yield engine.configure(call.call_id, negotiator.restored_sockets(call))
    except Exception:
        try:
            yield engine.release(call.call_id)
        except Exception:
            pass
        raise


@defer.inlineCallbacks
def restore_calls(store, registry, negotiator, interfaces):
    """Load every call of ``store`` into ``registry``; fire with
    ``(restored, failed)`` counts."""
    blobs = yield store.load_all()
    engine = registry.engine
    restored = failed = 0
    for call_id in sorted(blobs):
        if registry.get(call_id) is not None:
            continue
        try:
            call = decode(blobs[call_id], interfaces)
        except SnapshotError as e:
            failed += 1
            log.warn("call {call_id} not restored: {error}", call_id=call_id, error=str(e))
            continue
        try:
            yield bind_call(engine, negotiator, call)
        except Exception as e:
            failed += 1
            log.warn("call {call_id} not restored: {error!r}", call_id=call_id, error=e)
            continue
        registry.adopt(call)
        restored += 1
    log.info("restored {restored} calls from the state store ({failed} could not be)",
             restored=restored, failed=failed)
    return restored, failed
