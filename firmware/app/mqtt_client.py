# Small non-blocking MQTT 3.1.1 client (QoS 0/1) for MicroPython and CPython.
#
# One socket, one select.poll object, no threads.  The application calls
# poll() from its main loop; nothing here blocks except connect() (bounded by
# its timeout, plus the DNS lookup) and disconnect() (bounded drain of unsent
# bytes).  Reconnecting is left to the caller; Backoff below gives the delays.
#
# Callbacks (on_message, on_puback, on_suback) run inside poll().  An OSError or
# ValueError raised by a callback is treated like a broken link; anything else
# propagates to the caller of poll().
#
# Section numbers refer to the MQTT 3.1.1 specification.

import select
import socket

from app import mqtt_codec as mc
from engine.ticks import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from errno import EAGAIN, EINPROGRESS
except ImportError:
    EAGAIN = const(11)
    EINPROGRESS = const(115)

try:
    from random import getrandbits
except ImportError:
    getrandbits = None

_RX_CHUNK = const(512)  # one recv into a preallocated buffer
_RX_CHUNKS_PER_POLL = const(32)  # so a flood cannot pin poll() forever
_WOULD_BLOCK = (EAGAIN, 35, 10035, EINPROGRESS)  # EAGAIN (Linux, BSD/lwIP, Windows), EINPROGRESS


def _would_block(e):
    return e.args and e.args[0] in _WOULD_BLOCK


class MqttClient:
    # Unsent bytes kept while the socket is backed up; beyond this the link
    # is declared dead (the peer is not reading).
    OUT_MAX = 16384
    # Largest packet accepted from the broker.
    RX_MAX = mc.DEFAULT_MAX_PACKET

    def __init__(
        self,
        client_id,
        host,
        port,
        keepalive_s=15,
        user=None,
        password=None,
        clean_session=True,
        max_inflight=32,
    ):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.clean_session = clean_session
        self.max_inflight = max_inflight
        self.connected = False
        self.session_present = False
        self.on_message = None  # f(topic: str, payload: bytes)
        self.on_puback = None  # f(pid)
        self.on_suback = None  # f(pid, granted_qos_list); 0x80 = refused
        self.sock = None
        self._recv_into = None
        self._poller = None
        self._will = None
        self._subs = []  # [(filter, qos)], re-sent on every connect
        self._sub_pids = []  # SUBSCRIBEs awaiting SUBACK
        # [(pid, packet)] in send order, for 4.6 ordering on retransmit; a clean session never retransmits
        # (connect() forgets them), so it keeps no packet: (pid, None).
        self._inflight = []
        self._pid = 0
        self._out = bytearray()
        self._rxbuf = bytearray(_RX_CHUNK)
        self._reader = mc.PacketReader(self.RX_MAX)
        self._last_rx = 0
        self._last_tx = 0

    # -- configuration -------------------------------------------------

    def set_will(self, topic, payload, qos=1, retain=False):
        """Last will, sent in the next CONNECT (3.1.2.5); payload may change per connect."""
        self._will = (topic, payload, qos, retain)

    # -- connection ----------------------------------------------------

    def connect(self, timeout_ms=3000):
        """Open TCP, CONNECT and wait for CONNACK; raise OSError on any failure."""
        self.close()
        t0 = ticks_ms()
        if self._will:
            wt, wp, wq, wr = self._will
        else:
            wt, wp, wq, wr = None, b"", 0, False
        pkt = mc.encode_connect(
            self.client_id,
            self.keepalive_s,
            self.clean_session,
            self.user,
            self.password,
            wt,
            wp,
            wq,
            wr,
        )
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        self.sock = s
        self._recv_into = getattr(s, "recv_into", None) or s.readinto
        try:
            s.setblocking(False)
            try:
                s.connect(ai[-1])
            except OSError as e:
                if not _would_block(e):
                    raise
            p = select.poll()
            p.register(s, select.POLLOUT)
            if not p.poll(max(0, timeout_ms - ticks_diff(ticks_ms(), t0))):
                raise OSError("MQTT connect: TCP connect timeout")
            p.modify(s, select.POLLIN)
            self._poller = p
            self._last_rx = self._last_tx = ticks_ms()
            self._send(pkt)  # raises the pending socket error if TCP connect failed
            while True:
                self._flush()
                left = timeout_ms - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    raise OSError("MQTT connect: no CONNACK")
                if p.poll(left) and self._read_some() is None:
                    raise OSError("MQTT connect: closed by server")
                r = self._reader.next()
                if r is None:
                    continue
                # The server's first packet must be CONNACK, 3.2.
                if r[0] != mc.CONNACK:
                    raise OSError("MQTT connect: expected CONNACK, got type %d" % r[0])
                sp, rc = mc.parse_connack(r[2])
                if rc:
                    why = mc.CONNACK_REASONS[rc] if rc < len(mc.CONNACK_REASONS) else "unknown"
                    raise OSError("MQTT connect refused: return code %d (%s)" % (rc, why))
                break
        except (OSError, ValueError) as e:
            self.close()
            if isinstance(e, ValueError):
                raise OSError("MQTT connect: protocol error: %s" % e) from None
            raise
        self.session_present = sp
        self.connected = True
        self._last_rx = ticks_ms()
        if self.clean_session:
            # 3.1.2.4: a clean session discards the old one, unacknowledged PUBLISHes included
            # (the board's end-to-end resend covers them).
            self._inflight = []
        try:
            if self._subs:
                self._send_subscribe(self._subs)
            # 4.4: re-send unacknowledged PUBLISHes, in original order, DUP=1 (3.3.1.1).
            for _, pkt in self._inflight:
                self._send(bytes((pkt[0] | 0x08,)))
                self._send(memoryview(pkt)[1:])
        except OSError as e:
            self.close()
            raise OSError("MQTT connect: send failed after CONNACK: %s" % e) from None
        self._pump_out()

    def disconnect(self):
        """Clean DISCONNECT (3.14) so the broker discards the will, then close."""
        if self.connected:
            try:
                self._send(mc.encode_disconnect())
                t0 = ticks_ms()
                self._poller.modify(self.sock, select.POLLOUT)
                while self._out and ticks_diff(ticks_ms(), t0) < 1000:
                    self._poller.poll(50)
                    self._flush()
            except OSError:
                pass
        self.close()

    def close(self):
        """Drop the socket without DISCONNECT (the broker will publish the will)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._poller = None
        self.connected = False
        self._out = bytearray()
        self._reader.reset()
        self._sub_pids = []

    # -- operations ----------------------------------------------------

    def subscribe(self, topic, qos=1):
        """Remember the filter (re-sent on every connect) and send SUBSCRIBE now if connected.

        Returns the packet id used, or 0 if not connected.
        """
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1 only")
        for i in range(len(self._subs)):
            if self._subs[i][0] == topic:
                del self._subs[i]
                break
        self._subs.append((topic, qos))
        if not self.connected:
            return 0
        try:
            return self._send_subscribe(((topic, qos),))
        except OSError:
            self.close()
            return 0

    def publish(self, topic, payload, qos=1, retain=False):
        """Queue a PUBLISH.  Returns pid (QoS 1), 0 (QoS 0), or None if not accepted now.

        None means: window of max_inflight unacknowledged messages is full, or not
        connected; call poll() and retry.  A socket error here does not raise: the
        link is closed (connected=False) and a QoS 1 message stays in flight, to
        be re-sent by the next successful connect().
        """
        pid = self._publish_pid(qos)
        if pid is None:
            return None
        return self._send_publish(pid, mc.encode_publish(topic, payload, qos, retain, False, pid))

    def publish_in(self, topic, buf, start, end, qos=1, retain=False):
        """publish() of the payload buf[start:end] (buf: a memoryview), its packet's header written in place
        before it: buf[:start] is free, at least mc.publish_room(topic) bytes; topic: encoded bytes. No packet
        object is made (a board's ~1 KB data messages would fragment its heap)."""
        pid = self._publish_pid(qos)
        if pid is None:
            return None
        first = mc.encode_publish_header(buf, start, topic, end - start, qos, retain, False, pid)
        return self._send_publish(pid, buf[first:end])

    def inflight_count(self):
        return len(self._inflight)

    def out_pending(self):
        """Bytes queued because the socket would block (0 when the link keeps up)."""
        return len(self._out)

    def poll(self, timeout_ms=0):
        """Service the connection; returns connected state and never raises socket errors."""
        if not self.connected:
            return False
        try:
            p = self._poller
            p.modify(self.sock, select.POLLIN | select.POLLOUT if self._out else select.POLLIN)
            self._dispatch()  # packets that arrived together with CONNACK
            ev = p.poll(timeout_ms)
            if ev:
                if ev[0][1] & (select.POLLERR | select.POLLHUP) and not ev[0][1] & select.POLLIN:
                    raise OSError("socket error/hangup")
                for _ in range(_RX_CHUNKS_PER_POLL):
                    n = self._read_some()
                    if n is None:
                        raise OSError("closed by broker")
                    self._dispatch()
                    if not n:
                        break
            self._flush()
            ka = self.keepalive_s * 1000
            if ka:
                now = ticks_ms()
                # 3.1.2.10: the server drops us after 1.5 x keepalive of silence;
                # apply the same rule to the server (PINGRESP keeps it talking).
                if ticks_diff(now, self._last_rx) > ka + (ka >> 1):
                    raise OSError("keepalive timeout")
                if ticks_diff(now, self._last_tx) >= ka >> 1:
                    self._send(mc.encode_pingreq())
        except (OSError, ValueError):
            self.close()
            return False
        return self.connected

    # -- internals -----------------------------------------------------

    def _publish_pid(self, qos):
        # The packet id of a PUBLISH now: 0 for QoS 0, None when not connected or the in-flight window is full.
        if not self.connected:
            return None
        if qos == 0:
            return 0
        if qos != 1:
            raise ValueError("qos 0 or 1 only")
        if len(self._inflight) >= self.max_inflight:
            return None
        return self._next_pid()

    def _send_publish(self, pid, pkt):
        if pid:
            self._inflight.append((pid, None if self.clean_session else bytes(pkt)))
        try:
            self._send(pkt)
        except OSError:
            self.close()
        return pid

    def _next_pid(self):
        # 2.3.1: 1..65535, and never reuse an id that is still awaiting its ack.
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 0xFFFF else 1
            if pid in self._sub_pids:
                continue
            for q, _ in self._inflight:
                if q == pid:
                    break
            else:
                self._pid = pid
                return pid

    def _send_subscribe(self, topics):
        pid = self._next_pid()
        self._sub_pids.append(pid)
        self._send(mc.encode_subscribe(pid, topics))
        return pid

    def _dispatch(self):
        while True:
            r = self._reader.next()
            if r is None:
                return
            ptype, flags, body = r
            self._last_rx = ticks_ms()
            if ptype == mc.PUBLISH:
                topic, pid, payload, qos, _, _ = mc.parse_publish(flags, body)
                if qos > 1:
                    raise ValueError("QoS 2 delivery was never requested")
                if self.on_message:
                    self.on_message(topic, payload)
                if qos:
                    # Ack after the handler ran: at-least-once for the app too (4.3.2).
                    self._send(mc.encode_puback(pid))
            elif ptype == mc.PUBACK:
                if len(body) != 2:
                    raise ValueError("malformed PUBACK")
                pid = mc.parse_pid(body)
                inf = self._inflight
                for i in range(len(inf)):
                    if inf[i][0] == pid:
                        del inf[i]
                        if self.on_puback:
                            self.on_puback(pid)
                        break
            elif ptype == mc.SUBACK:
                pid, codes = mc.parse_suback(body)
                if pid in self._sub_pids:
                    self._sub_pids.remove(pid)
                if self.on_suback:
                    self.on_suback(pid, codes)
            elif ptype != mc.PINGRESP:
                raise ValueError("unexpected packet type %d" % ptype)

    def _read_some(self):
        """Read once: bytes read (0 = would block), None = EOF."""
        try:
            # CPython has recv_into; MicroPython's stream readinto returns None when it would block.
            n = self._recv_into(self._rxbuf)
            if n is None:
                return 0
        except OSError as e:
            if _would_block(e):
                return 0
            raise
        if not n:
            return None
        self._reader.feed(memoryview(self._rxbuf)[:n])
        return n

    def _write(self, data):
        try:
            n = self.sock.send(data)
        except OSError as e:
            if _would_block(e):
                return 0
            raise
        return n or 0

    def _send(self, data):
        # Write straight through when nothing is queued; queue only the rest
        # (non-blocking sockets may accept part of a packet).
        self._last_tx = ticks_ms()
        if not self._out:
            n = self._write(data)
            if n == len(data):
                return
            data = memoryview(data)[n:]
        if len(self._out) + len(data) > self.OUT_MAX:
            raise OSError("outgoing buffer full")
        self._out.extend(data)

    def _flush(self):
        out = self._out
        while out:
            n = self._write(out)
            if not n:
                return
            out[0:n] = b""

    def _pump_out(self):
        try:
            self._flush()
        except OSError:
            self.close()


class Backoff:
    """Reconnect delays: doubling from initial_ms, capped at max_ms, with +-20% jitter."""

    def __init__(self, initial_ms=500, max_ms=8000):
        self.initial_ms = initial_ms
        self.max_ms = max_ms
        self._cur = initial_ms
        self._seed = (ticks_ms() & 0xFFFF) | 1

    def _rand16(self):
        if getrandbits:
            return getrandbits(16)
        # ZX81-style LCG: small-int arithmetic only, good enough for jitter.
        self._seed = (self._seed * 75 + 74) % 65537
        return self._seed & 0xFFFF

    def reset(self):
        self._cur = self.initial_ms

    def next_delay_ms(self):
        base = self._cur
        self._cur = min(base * 2, self.max_ms)
        # factor in [0.8, 1.2): 800 + (0..399) per mille
        d = base * (800 + (self._rand16() * 400 >> 16)) // 1000
        return min(d, self.max_ms)
