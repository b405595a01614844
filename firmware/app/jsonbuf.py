# Compact JSON written into a caller's buffer piece by piece, byte for byte as json.dumps(value,
# separators=(",", ":")) writes it: no string or bytes object of the message is made, so it needs no contiguous
# block of heap (the board's birth and data messages are ~1 KB). Each function writes at `pos` and returns the
# position after what it wrote; a buffer too short raises IndexError.

_NULL = b"null"


def put_int(buf, pos, value):
    """A decimal integer; None as null."""
    if value is None:
        buf[pos : pos + 4] = _NULL
        return pos + 4
    if value < 0:
        buf[pos] = 0x2D  # "-"
        pos += 1
        value = -value
    # The digits from the lowest, then reversed in place: no power of ten is built (beyond 2**30 it would be a
    # heap object on a 32-bit board).
    start = pos
    while True:
        buf[pos] = 0x30 + value % 10
        value //= 10
        pos += 1
        if not value:
            break
    i = start
    j = pos - 1
    while i < j:
        buf[i], buf[j] = buf[j], buf[i]
        i += 1
        j -= 1
    return pos


def put_value(buf, pos, value):
    """A dict with str keys (in its own order, the one json.dumps goes through it in), list, tuple, int, None, or
    a str of printable ASCII without '"' and '\\' (what the board sends; json.dumps would escape the rest):
    ValueError for anything else."""
    kind = type(value)
    if value is None or kind is int:
        return put_int(buf, pos, value)
    if kind is str:
        buf[pos] = 0x22  # '"'
        for i in range(len(value)):  # by index: a str iterator would be an object per string
            c = ord(value[i])
            if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:
                raise ValueError("a string JSON would escape")
            pos += 1
            buf[pos] = c
        buf[pos + 1] = 0x22
        return pos + 2
    if kind is dict or kind is list or kind is tuple:
        sep = 0x7B if kind is dict else 0x5B  # "{" or "[" before the first item, "," before the others
        close = sep + 2  # "}" or "]"
        for item in value:
            buf[pos] = sep
            sep = 0x2C
            pos = put_value(buf, pos + 1, item)
            if kind is dict:
                buf[pos] = 0x3A  # ":"
                pos = put_value(buf, pos + 1, value[item])
        if sep != 0x2C:  # empty
            buf[pos] = sep
            pos += 1
        buf[pos] = close
        return pos + 1
    raise ValueError("not a JSON value of the board's")
