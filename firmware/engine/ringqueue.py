# Flash-backed ring queue of samples: every sample is written here before it is published, and it
# leaves only when the host says it has committed it (end-to-end acknowledgement).
#
# File "queue.bin": a 16-byte header (magic, slot bytes, capacity) and `capacity` fixed-size slots.
# Slot (format 2, magic "SXQ2"):
#   i32 words [index, boot, seq, t, tm | tr << 10, current_mA, cells (CELL_FIELDS per cell)],
#   u16 [estimates (ESTIMATE_FIELDS per cell), sos level, reason count, MAX_REASONS reason codes]
#   (0xFFFF: absent, e.g. a board running without estimation), then a CRC-32 of all of it.
# Format 1 ("SXQ1", before the estimates) is recognised, never read as format 2: its slots are scanned
# once for the boot ids (a boot id must never repeat), its unacknowledged records are counted as dropped
# (`discarded`), and an empty format-2 queue replaces it.
# `index` counts every record ever written; slot = index % capacity. The head (next index) is
# found again after a power cut by scanning the slots, so appends cost one slot write and no
# metadata write. The tail (oldest unacknowledged) and the drop count go to "queue.tail",
# written atomically (temporary file, rename) at most once per persist interval: after a crash
# the board resends at most that interval of already-acknowledged records, and the host's
# UNIQUE(device, boot, seq) absorbs them. On overflow the oldest records are dropped and counted.

import binascii
import os

from engine.nvstate import exists
from engine.sample import ESTIMATE_FIELDS, MAX_REASONS
from soxcommon.frame import ABSENT, CELL_FIELDS, get_i32, get_u16, get_u32, put_i32, put_u16, put_u32

MAGIC = 0x32515853  # "SXQ2"
MAGIC_V1 = 0x31515853  # "SXQ1": no estimates
HEADER_BYTES = 16
HEAD_WORDS = 6
NONE_U16 = 0xFFFF  # an absent estimate or level


def _words_bytes(n_cells):
    return 4 * (HEAD_WORDS + CELL_FIELDS * n_cells)


def slot_bytes(n_cells):
    return _words_bytes(n_cells) + 2 * (ESTIMATE_FIELDS * n_cells + 2 + MAX_REASONS) + 4


def slot_bytes_v1(n_cells):
    return _words_bytes(n_cells) + 4


class RingQueue:
    def __init__(self, directory, n_cells, capacity):
        self.n_cells = n_cells
        self.capacity = capacity
        self._est_off = _words_bytes(n_cells)  # the u16 part of a slot
        self._path = directory + "/queue.bin"
        self._tail_path = directory + "/queue.tail"
        self._layout(slot_bytes(n_cells))
        self._key = bytearray(12)  # index, boot, seq of a slot
        self.head = 0
        self.tail = 0
        self.dropped = 0
        self.corrupt = 0
        self.discarded = 0  # unacknowledged records of a format-1 queue (also counted in dropped)
        self.last_boot = 0  # highest boot id in any readable slot (acknowledged slots keep theirs)
        self._tail_saved = -1
        self._acks = {}  # boot -> highest sequence the host committed
        self._open()

    # --- storage -------------------------------------------------------------------------------

    def _layout(self, slot):
        self.slot = slot
        self.rec = bytearray(slot)  # record being written or last read
        self._rec_view = memoryview(self.rec)[: slot - 4]

    def _open(self):
        hdr = bytearray(HEADER_BYTES)
        fresh = True
        if exists(self._path):
            self._f = open(self._path, "r+b")
            if self._f.readinto(hdr) == HEADER_BYTES and get_u32(hdr, 8) == self.capacity:
                if get_u32(hdr, 0) == MAGIC_V1 and get_u32(hdr, 4) == slot_bytes_v1(self.n_cells):
                    self._retire_v1()
                else:
                    fresh = get_u32(hdr, 0) != MAGIC or get_u32(hdr, 4) != self.slot
            if fresh:
                self._f.close()
        if fresh:
            # New, reconfigured (cell count or capacity changed) or format 1: start an empty queue.
            put_u32(hdr, 0, MAGIC)
            put_u32(hdr, 4, self.slot)
            put_u32(hdr, 8, self.capacity)
            self._f = open(self._path, "w+b")
            self._f.write(hdr)
            blank = bytearray(self.slot)
            for _ in range(self.capacity):
                self._f.write(blank)
            self._f.flush()
            self._write_tail()
            return
        self._read_tail()
        self._scan_head()

    def _retire_v1(self):
        """A format-1 queue: learn its boot ids and count its unacknowledged records as dropped."""
        slot = self.slot
        self._layout(slot_bytes_v1(self.n_cells))
        self._read_tail()
        self._scan_head()
        self.discarded = self.head - self.tail
        self.dropped += self.discarded
        self.head = self.tail = 0
        self._layout(slot)

    def _read_tail(self):
        try:
            with open(self._tail_path) as f:
                words = f.read().split()
            self.tail = int(words[0])
            self.dropped = int(words[1])
        except (OSError, ValueError, IndexError):
            self.tail = 0
            self.dropped = 0
        self._tail_saved = self.tail

    def _write_tail(self):
        tmp = self._tail_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d %d\n" % (self.tail, self.dropped))
        os.rename(tmp, self._tail_path)
        self._tail_saved = self.tail

    def _scan_head(self):
        head = 0
        for slot in range(self.capacity):
            if self._read_slot(slot) and get_u32(self.rec, 0) % self.capacity == slot:
                index = get_u32(self.rec, 0)
                if index + 1 > head:
                    head = index + 1
                boot = get_i32(self.rec, 4)
                if boot > self.last_boot:
                    self.last_boot = boot
        self.head = head
        if self.tail > head:
            self.tail = head
        if head - self.tail > self.capacity:
            # Records overwritten since the tail was last saved were dropped: count them exactly.
            self.dropped += head - self.capacity - self.tail
            self.tail = head - self.capacity

    def _read_slot(self, slot):
        f = self._f
        f.seek(HEADER_BYTES + slot * self.slot)
        if f.readinto(self.rec) != self.slot:
            return False
        return binascii.crc32(self._rec_view) == get_u32(self.rec, self.slot - 4)

    # --- producer ------------------------------------------------------------------------------

    def append(self, boot, seq, t_s, t_ms_part, relative, sample, estimate):
        """Write one sample and its engine.sample.Estimate; drops (and counts) the oldest record when
        full. Allocates nothing."""
        rec = self.rec
        index = self.head
        put_u32(rec, 0, index)
        put_i32(rec, 4, boot)
        put_i32(rec, 8, seq)
        put_i32(rec, 12, t_s)
        put_i32(rec, 16, t_ms_part | (relative << 10))
        put_i32(rec, 20, sample.current_mA)
        cells = sample.cells
        off = 4 * HEAD_WORDS
        for k in range(len(cells)):
            put_i32(rec, off, cells[k])
            off += 4
        values = estimate.values
        for k in range(len(values)):
            v = values[k]
            put_u16(rec, off, NONE_U16 if v == ABSENT else v)
            off += 2
        level = estimate.level
        put_u16(rec, off, NONE_U16 if level == ABSENT else level)
        put_u16(rec, off + 2, estimate.n_reasons)
        off += 4
        reasons = estimate.reasons
        for k in range(MAX_REASONS):
            put_u16(rec, off, reasons[k])
            off += 2
        put_u32(rec, off, binascii.crc32(self._rec_view))
        f = self._f
        f.seek(HEADER_BYTES + (index % self.capacity) * self.slot)
        f.write(rec)
        f.flush()
        self.head = index + 1
        if self.head - self.tail > self.capacity:
            self.tail += 1
            self.dropped += 1

    def __len__(self):
        return self.head - self.tail

    # --- consumer ------------------------------------------------------------------------------

    def read(self, index):
        """Load record `index` into self.rec; False when its slot is corrupt or overwritten."""
        return self._read_slot(index % self.capacity) and get_u32(self.rec, 0) == index

    def record_boot(self):
        return get_i32(self.rec, 4)

    def record_seq(self):
        return get_i32(self.rec, 8)

    def record_time(self):
        word = get_i32(self.rec, 16)
        return get_i32(self.rec, 12), word & 0x3FF, word >> 10

    def record_current(self):
        return get_i32(self.rec, 20)

    def record_cell(self, c, k):
        return get_i32(self.rec, 4 * (HEAD_WORDS + c * CELL_FIELDS + k))

    def record_estimate(self, c, k):
        """Estimate k (wire.ESTIMATE_QUANTITIES order) of cell c; ABSENT when not estimated."""
        v = get_u16(self.rec, self._est_off + 2 * (c * ESTIMATE_FIELDS + k))
        return ABSENT if v == NONE_U16 else v

    def record_level(self):
        """The state-of-safety level; ABSENT: the record has no estimates."""
        v = get_u16(self.rec, self._est_off + 2 * ESTIMATE_FIELDS * self.n_cells)
        return ABSENT if v == NONE_U16 else v

    def record_reasons(self):
        return get_u16(self.rec, self._est_off + 2 * ESTIMATE_FIELDS * self.n_cells + 2)

    def record_reason(self, i):
        return get_u16(self.rec, self._est_off + 2 * (ESTIMATE_FIELDS * self.n_cells + 2 + i))

    def low_seq(self, boot):
        """Oldest sequence of `boot` still queued (everything below it is committed or dropped)."""
        if self.tail < self.head and self._key_at(self.tail) and get_i32(self._key, 4) == boot:
            return get_i32(self._key, 8)
        return 0

    def _key_at(self, index):
        f = self._f
        f.seek(HEADER_BYTES + (index % self.capacity) * self.slot)
        return f.readinto(self._key) == 12 and get_u32(self._key, 0) == index

    def ack(self, boot, seq):
        """The host committed every record of `boot` up to `seq`: release them from the tail."""
        if self._acks.get(boot, -1) < seq:
            self._acks[boot] = seq
            if len(self._acks) > 4:
                del self._acks[min(self._acks)]
        released = 0
        while self.tail < self.head:
            if not self._key_at(self.tail):
                self.corrupt += 1  # unreadable record: it can never be sent, release it
            else:
                if self._acks.get(get_i32(self._key, 4), -1) < get_i32(self._key, 8):
                    break
            self.tail += 1
            released += 1
        return released

    def persist(self):
        """Save the tail when it moved; the caller calls this at most once per persist interval
        (flash wear)."""
        if self.tail != self._tail_saved:
            self._write_tail()

    def close(self):
        self._write_tail()
        self._f.close()
