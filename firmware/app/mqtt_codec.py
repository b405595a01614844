# MQTT 3.1.1 packet codec (OASIS standard, 2014), no I/O.
#
# Runs unchanged under MicroPython and CPython.  Only what a small telemetry
# client needs: QoS 0/1 publish, subscribe, keepalive.  Section numbers in the
# comments refer to the MQTT 3.1.1 specification.
#
# Every decoder raises ValueError (and nothing else) on malformed input, so a
# caller can treat "ValueError" as "protocol violation, drop the connection".

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Control packet types, 2.2.1.
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# Largest remaining length a 4-byte varint can carry, 2.2.3.
MAX_REMAINING = const(268435455)
DEFAULT_MAX_PACKET = const(16384)

# CONNACK return codes, 3.2.2.3 (index = code).
CONNACK_REASONS = (
    "accepted",
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)
SUBACK_FAILURE = const(0x80)

_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
# Protocol name "MQTT" and level 4 = 3.1.1, 3.1.2.1 / 3.1.2.2.
_PROTO = b"\x00\x04MQTT\x04"


def _utf8(s):
    # Strings go on the wire as UTF-8; bytes are accepted as already encoded.
    if isinstance(s, str):
        return s.encode("utf-8")
    return bytes(s)


def _u16(n):
    return struct.pack("!H", n)


def _field(b):
    # Length-prefixed string / binary data, 1.5.3 and 1.5.6.
    if len(b) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return _u16(len(b)) + b


def _remaining_bytes(remaining):
    # Bytes of the remaining length's varint, 2.2.3.
    if remaining > MAX_REMAINING:
        raise ValueError("packet too large")
    return 1 if remaining < 0x80 else 2 if remaining < 0x4000 else 3 if remaining < 0x200000 else 4


def _put_remaining(buf, i, remaining):
    # Remaining length is a base-128 varint, low group first, 2.2.3; written at buf[i], returns the index after it.
    while remaining > 0x7F:
        buf[i] = (remaining & 0x7F) | 0x80
        remaining >>= 7
        i += 1
    buf[i] = remaining
    return i + 1


def _fixed_header(byte0, remaining):
    out = bytearray(1 + _remaining_bytes(remaining))
    out[0] = byte0
    _put_remaining(out, 1, remaining)
    return bytes(out)


def _check_pid(pid):
    # Packet identifiers are non-zero 16-bit values, 2.3.1.
    if not 0 < pid <= 0xFFFF:
        raise ValueError("packet id out of range")


def _check_qos(qos):
    if qos not in (0, 1, 2):
        raise ValueError("bad qos")


def _check_topic_name(t):
    # Topic names are non-empty and carry no wildcards or NUL, 4.7.1 / 4.7.3 / 1.5.3.
    if not t:
        raise ValueError("empty topic")
    if b"+" in t or b"#" in t or b"\x00" in t:
        raise ValueError("invalid character in topic name")


def encode_connect(
    client_id,
    keepalive_s,
    clean_session=True,
    user=None,
    password=None,
    will_topic=None,
    will_payload=b"",
    will_qos=0,
    will_retain=False,
):
    """CONNECT, 3.1.  Payload order is fixed: id, will topic, will msg, user, password."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive out of range")
    if password is not None and user is None:
        raise ValueError("password requires user")  # 3.1.2-22
    flags = 0x02 if clean_session else 0
    parts = [_PROTO, None, _u16(keepalive_s), _field(_utf8(client_id))]
    if will_topic is not None:
        _check_qos(will_qos)
        wt = _utf8(will_topic)
        _check_topic_name(wt)
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        parts.append(_field(wt))
        parts.append(_field(_utf8(will_payload)))
    if user is not None:
        flags |= 0x80
        parts.append(_field(_utf8(user)))
    if password is not None:
        flags |= 0x40
        parts.append(_field(_utf8(password)))
    parts[1] = bytes((flags,))
    n = 0
    for p in parts:
        n += len(p)
    parts.insert(0, _fixed_header(0x10, n))
    return b"".join(parts)


def publish_room(topic):
    """Bytes a PUBLISH's header may take before its payload (topic: encoded bytes): byte 0, a remaining length of
    up to 4 bytes, the topic with its length, a packet id."""
    return 9 + len(topic)


def _publish_remaining(topic, payload_len, qos):
    # The topic with its length, a packet id (QoS > 0) and the payload, 3.3.2.
    return 2 + len(topic) + (2 if qos else 0) + payload_len


def encode_publish_header(buf, end, topic, payload_len, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH, 3.3, in place: its header written into `buf` (a bytearray or a view of one) so that it ends at
    `end`, where the payload already is (publish_room(topic) bytes before it are enough); returns where the
    packet starts. Topic: encoded bytes. Nothing is allocated: the board publishes its data messages from the
    buffer they are written into."""
    _check_qos(qos)
    _check_topic_name(topic)
    if qos:
        _check_pid(pid)
    elif dup:
        raise ValueError("DUP must be 0 for QoS 0")  # 3.3.1-2
    n = len(topic)
    if n > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    remaining = _publish_remaining(topic, payload_len, qos)
    start = end - 1 - _remaining_bytes(remaining) - (remaining - payload_len)
    if start < 0:
        raise ValueError("no room for the PUBLISH header")
    buf[start] = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    i = _put_remaining(buf, start + 1, remaining)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    buf[i + 2 : i + 2 + n] = topic
    if qos:
        buf[end - 2] = pid >> 8
        buf[end - 1] = pid & 0xFF
    return start


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH, 3.3, as a new packet (a bytearray)."""
    t = _utf8(topic)
    if type(payload) is not bytes:
        payload = _utf8(payload)
    remaining = _publish_remaining(t, len(payload), qos)
    pkt = bytearray(1 + _remaining_bytes(remaining) + remaining)
    header = len(pkt) - len(payload)
    pkt[header:] = payload
    encode_publish_header(pkt, header, t, len(payload), qos, retain, dup, pid)
    return pkt


def encode_puback(pid):
    _check_pid(pid)
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def encode_subscribe(pid, topics):
    """SUBSCRIBE, 3.8.  topics: list of (filter, qos); the fixed-header flags must be 0b0010."""
    _check_pid(pid)
    if not topics:
        raise ValueError("no topics")  # 3.8.3-3
    parts = [None, _u16(pid)]
    n = 2
    for topic, qos in topics:
        _check_qos(qos)
        t = _utf8(topic)
        if not t:
            raise ValueError("empty topic filter")
        f = _field(t) + bytes((qos,))
        parts.append(f)
        n += len(f)
    parts[0] = _fixed_header(0x82, n)
    return b"".join(parts)


def encode_pingreq():
    return _PINGREQ


def encode_disconnect():
    return _DISCONNECT


class PacketReader:
    """Reassembles packets from a byte stream.

    feed() bytes as they arrive, then call next() until it returns None.  The
    buffer holds at most one incomplete packet plus the latest feed, because a
    packet whose declared length exceeds max_len is rejected as soon as its
    fixed header is readable.
    """

    def __init__(self, max_len=DEFAULT_MAX_PACKET):
        self.max_len = max_len
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte

    def reset(self):
        self._buf = bytearray()
        self._pos = 0

    def pending(self):
        return len(self._buf) - self._pos

    def feed(self, data):
        buf = self._buf
        if self._pos:
            # Drop consumed bytes in place (the only move a partial packet sees).
            buf[0 : self._pos] = b""
            self._pos = 0
        if len(buf) > self.max_len + 5:
            # Only happens if the caller kept feeding without draining next().
            raise ValueError("receive buffer overflow")
        buf.extend(data)

    def next(self):
        """Return (ptype, flags, body) for the next complete packet, or None."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        i = pos + 1
        length = 0
        shift = 0
        while True:
            if i >= end:
                return None  # fixed header not complete yet
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")  # more than 4 bytes, 2.2.3
        if length > self.max_len:
            raise ValueError("packet too large")
        stop = i + length
        if stop > end:
            return None
        byte0 = buf[pos]
        body = bytes(memoryview(buf)[i:stop])
        if stop == end:
            buf[0:end] = b""  # keep the buffer small when idle
            self._pos = 0
        else:
            self._pos = stop
        return (byte0 >> 4, byte0 & 0x0F, body)


def parse_connack(body):
    """CONNACK, 3.2 -> (session_present, return_code)."""
    if len(body) != 2 or body[0] & 0xFE:
        raise ValueError("malformed CONNACK")  # 3.2.2.1: bits 7-1 reserved
    return (bool(body[0] & 1), body[1])


def parse_pid(body):
    """Leading packet identifier of PUBACK / SUBACK (and friends), 2.3.1."""
    if len(body) < 2:
        raise ValueError("missing packet id")
    pid = (body[0] << 8) | body[1]
    if not pid:
        raise ValueError("packet id 0")
    return pid


def parse_suback(body):
    """SUBACK, 3.9 -> (pid, [granted_qos or 0x80, ...])."""
    pid = parse_pid(body)
    codes = list(body[2:])
    if not codes:
        raise ValueError("SUBACK without return codes")
    for c in codes:
        if c > 2 and c != SUBACK_FAILURE:
            raise ValueError("bad SUBACK return code")  # 3.9.3
    return (pid, codes)


def parse_publish(flags, body):
    """PUBLISH, 3.3 -> (topic, pid, payload, qos, dup, retain); pid is 0 for QoS 0."""
    qos = (flags >> 1) & 3
    if qos == 3:
        raise ValueError("bad qos")  # 3.3.1-4
    if len(body) < 2:
        raise ValueError("truncated PUBLISH")
    n = (body[0] << 8) | body[1]
    off = 2 + n
    if off > len(body):
        raise ValueError("truncated topic")
    t = body[2:off]
    _check_topic_name(t)
    topic = t.decode("utf-8")  # UnicodeError is a ValueError in both runtimes
    pid = 0
    if qos:
        if off + 2 > len(body):
            raise ValueError("truncated packet id")
        pid = parse_pid(body[off : off + 2])
        off += 2
    return (topic, pid, body[off:], qos, bool(flags & 8), bool(flags & 1))
