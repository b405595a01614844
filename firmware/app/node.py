# The board's main loop: sample -> flash queue -> MQTT, with end-to-end acknowledgement.
#
# Every sample is appended to the flash queue before anything is sent. Records are published in
# order from the queue's tail, at most `send_window` beyond the last host-committed record; they
# leave the queue only when the host's ack (topic .../ack, {"b": boot, "s": watermark}) says
# they are committed. No ack progress for `ack_timeout_ms`, or a reconnect, rewinds the send
# cursor to the tail: records are sent again with their original boot id and sequence number.
# Sampling runs on sample time (the rig's in lockstep); keepalive, backoff and ack timeouts on
# wall time.
# With a "sox" section in the config every sample is estimated (engine/sox.py: SoC, SoH, state of
# safety) before it is queued, and the queue record carries the estimates. Estimator files that are
# missing or wrong are named in the log, and the board runs on without estimation.

import gc
import json
import sys
import time

from app import mqtt_codec, telemetry
from app.mqtt_client import Backoff, MqttClient
from engine.clock import SampleClock
from engine.nvstate import NvState
from engine.ringqueue import RingQueue
from engine.sample import Estimate, Sample
from engine.ticks import sleep_ms, ticks_add, ticks_diff, ticks_ms
from soxcommon import wire

HEARTBEAT_MS = 1000
EMA_SHIFT = 5


def _forget_modules_since(loaded):
    """Drop the modules imported since sys.modules held `loaded` (and their package attributes): their code goes."""
    for name in list(sys.modules):
        if name not in loaded:
            del sys.modules[name]
            package, _, attr = name.rpartition(".")
            if package in sys.modules and hasattr(sys.modules[package], attr):
                delattr(sys.modules[package], attr)
    gc.collect()


class Node:
    def __init__(self, cfg, hal, watchdog, log=print):
        self.cfg = cfg
        self.hal = hal
        self.wdt = watchdog
        self.log = log
        self.device = cfg["device_id"]
        # The config's garbage collected first, so that what stays lies packed below the start's transients, not
        # between the config's holes (the start then fits in ~8 KB less heap, measured on the unix port).
        gc.collect()
        # Birth and data messages are written into one buffer and published from there: no ~1 KB objects, which
        # fragmented the heap. Made first, in one piece on the empty heap (~1.7 KB for 16 cells).
        self._birth_topic = self._topic("birth").encode()
        self._data_topic = self._topic("data").encode()
        room = max(mqtt_codec.publish_room(self._birth_topic), mqtt_codec.publish_room(self._data_topic))
        self.msgs = telemetry.Messages(cfg["cells"], room)
        # Then the estimators: loading their files makes the largest transients of the start (the safety
        # limits' JSON, ~19 KB as Python objects; the cell model's JSON, ~50 KB, where it has no binary
        # companion), best met by an empty heap; what stays is then allocated below the rest.
        self.sox = self._make_sox(cfg)
        gc.collect()
        data_dir = cfg["data_dir"]
        self.state = NvState(data_dir + "/state.json", {"boot": 0, "bd": 0})
        if self.state.damaged:
            log("state file damaged: boot id continues from the flash queue's records")
        self.queue = RingQueue(data_dir, cfg["cells"], cfg["queue_capacity"])
        if self.queue.discarded:
            log("queue of an older format (no estimates): %d unacknowledged records counted as dropped"
                % self.queue.discarded)
        # A boot id must never repeat: the host would take the new boot's records for duplicates.
        # The queue's slots remember the last boot that wrote one, even if the state file is lost.
        self.boot = max(self.state.values["boot"], self.queue.last_boot) + 1
        self.state.values["boot"] = self.boot
        self.state.save()
        self.seq = 0
        self.sample = Sample(cfg["cells"])
        self.estimate = Estimate(cfg["cells"])  # stays absent without estimation
        self._prev_t_ms = None
        # Per sample, in us: the estimators' time and the whole (estimate + queue append), each as a moving
        # average over about 2**EMA_SHIFT samples (bounded integers however long the board runs), and the
        # estimators' largest.
        self.estimate_us_avg = 0
        self.estimate_us_max = 0
        self.process_us_avg = 0
        self.clock = SampleClock()
        self.send_pos = self.queue.tail
        self.resends = 0
        self.bad_commands = 0
        self.hal_errors = 0
        self.heap_live_peak = 0
        broker = cfg["broker"]
        self.mqtt = MqttClient(
            self.device, broker["host"], broker["port"], keepalive_s=broker["keepalive_s"],
            user=broker["user"], password=broker["password"], clean_session=True,
            max_inflight=cfg["mqtt_inflight"])
        self.mqtt.on_message = self._on_message
        self.backoff = Backoff()
        self._subscribed = False
        self._birth_pending = False
        now = ticks_ms()
        self._next_connect = now
        self._next_sample = now
        self._last_progress = now
        self._last_persist = now
        self._last_beat = now

    def _make_sox(self, cfg):
        files = cfg.get("sox")
        if files is None:
            return None
        loaded = list(sys.modules)
        try:
            from engine.sox import Sox

            gc.collect()  # the imports' garbage gone: the files' transient finds room in one piece
            sox = Sox(cfg["cells"], cfg["sample_period_ms"], files["cell_model"], files["estimator"],
                      files["nn_model"], files["safety"])
        except (ValueError, MemoryError) as e:  # engine.sox.SoxError names the file; or no room for it all
            self.log("estimation off: %s" % e)
            _forget_modules_since(loaded)  # the estimators' code (~40 KB) would only take the heap
            return None
        self.log("estimation on: cell model %s%s" % (sox.model.name, ", fused with the NN" if sox.nn else ""))
        return sox

    # --- MQTT session --------------------------------------------------------------------------

    def _topic(self, kind):
        return wire.topic(self.device, kind)

    def _connect(self):
        bd = self.state.values["bd"] + 1
        # The will carries the session counter, so a late will of an old session is recognised.
        self.mqtt.set_will(self._topic("death"), telemetry.death(bd), 1, False)
        try:
            self.mqtt.connect()
        except OSError as e:
            delay = self.backoff.next_delay_ms()
            self.log("broker connect failed (%s); retry in %d ms" % (e, delay))
            self._next_connect = ticks_add(ticks_ms(), delay)
            return
        self.backoff.reset()
        self.state.values["bd"] = bd
        self.state.save()
        if not self._subscribed:
            # The client re-sends remembered subscriptions on every later connect.
            self.mqtt.subscribe(self._topic("ack"), 1)
            self.mqtt.subscribe(self._topic("cmd/#"), 1)
            self._subscribed = True
        self._publish_birth()
        self.log("connected, session %d, boot %d, %d queued" % (bd, self.boot, len(self.queue)))

    def _publish_birth(self):
        """Birth first, then data from the queue's tail. Retried from step() while the MQTT in-flight
        window is still full of the last session's messages (re-sent on reconnect)."""
        q = self.queue
        msgs = self.msgs
        end = msgs.birth(self.boot, self.state.values["bd"], len(q), q.dropped)
        self._birth_pending = self.mqtt.publish_in(self._birth_topic, msgs.view, msgs.start, end, 1) is None
        self._rewind()

    def _rewind(self):
        self.send_pos = self.queue.tail
        self._last_progress = ticks_ms()

    def _on_message(self, topic, payload):
        try:
            kind = wire.split_topic(topic)[1]
            msg = json.loads(payload)
            if kind == "ack":
                if self.queue.ack(msg["b"], msg["s"]):
                    self._last_progress = ticks_ms()
                    if self.send_pos < self.queue.tail:
                        self.send_pos = self.queue.tail
            elif kind == "cmd/time":
                self.clock.sync(msg["t"], msg["tm"], self.sample.t_ms)
            elif kind == "cmd/rebirth":
                self._publish_birth()
            else:
                raise ValueError("unknown command " + kind)
        except (ValueError, KeyError, TypeError) as e:
            self.bad_commands += 1
            self.log("ignored message on %s: %s" % (topic, e))

    def _pump(self):
        """Publish queued records from the send cursor, inside the send window."""
        q = self.queue
        limit = q.tail + self.cfg["send_window"]
        while self.send_pos < q.head and self.send_pos < limit:
            if not q.read(self.send_pos):
                self.send_pos += 1  # corrupt slot: released by the next ack
                continue
            msgs = self.msgs
            end = msgs.data(q, q.low_seq(q.record_boot()))
            if self.mqtt.publish_in(self._data_topic, msgs.view, msgs.start, end, 1) is None:
                return  # MQTT in-flight window full
            self.send_pos += 1

    # --- sampling ------------------------------------------------------------------------------

    def _take_sample(self):
        try:
            self.hal.read(self.sample)
        except OSError as e:
            self.hal_errors += 1
            self.log("sample skipped: %s" % e)
            return
        sample = self.sample
        t_s, t_ms, relative = self.clock.stamp(sample.t_ms)
        t0 = time.ticks_us()
        if self.sox is not None:
            prev = self._prev_t_ms
            self._prev_t_ms = sample.t_ms
            dt_ms = 0 if prev is None else sample.t_ms - prev
            self.sox.step(sample, dt_ms * 0.001 if dt_ms > 0 else 0.0)
            self.sox.export(self.estimate)
        t1 = time.ticks_us()
        self.queue.append(self.boot, self.seq, t_s, t_ms, relative, sample, self.estimate)
        t2 = time.ticks_us()
        self.seq += 1
        estimate_us = time.ticks_diff(t1, t0)
        self.estimate_us_avg += (estimate_us - self.estimate_us_avg) >> EMA_SHIFT
        self.process_us_avg += (time.ticks_diff(t2, t0) - self.process_us_avg) >> EMA_SHIFT
        if estimate_us > self.estimate_us_max:
            self.estimate_us_max = estimate_us

    def _sample_period_ms(self):
        return self.cfg["pace_ms"] if self.cfg["lockstep"] else self.cfg["sample_period_ms"]

    # --- loop ----------------------------------------------------------------------------------

    def step(self):
        now = ticks_ms()
        if ticks_diff(now, self._last_beat) >= HEARTBEAT_MS:
            self.wdt.feed()
            self._last_beat = now
            self._measure_heap()
        if not self.mqtt.connected and ticks_diff(now, self._next_connect) >= 0:
            self._connect()
        limit = self.cfg["max_samples"]
        # Lockstep time waits for us: sample no faster than the host commits (no overflow drops).
        held = self.cfg["lockstep"] and len(self.queue) >= self.cfg["send_window"]
        if (limit == 0 or self.seq < limit) and not held and ticks_diff(now, self._next_sample) >= 0:
            self._take_sample()
            self._next_sample = ticks_add(self._next_sample, self._sample_period_ms())
            if ticks_diff(now, self._next_sample) > 0:
                self._next_sample = now  # fell behind: do not burst to catch up
        if self.mqtt.connected and self._birth_pending:
            self._publish_birth()
        if self.mqtt.connected and not self._birth_pending:
            if self.send_pos > self.queue.tail and \
                    ticks_diff(now, self._last_progress) > self.cfg["ack_timeout_ms"]:
                self.resends += self.send_pos - self.queue.tail
                self._rewind()
            self._pump()
        if ticks_diff(now, self._last_persist) >= self.cfg["persist_interval_ms"]:
            self.queue.persist()
            self._last_persist = now
        wait = ticks_diff(self._next_sample, ticks_ms())
        if self.mqtt.connected:
            self.mqtt.poll(max(0, min(wait, 50)))
        elif wait > 0:
            sleep_ms(min(wait, 50))

    def _measure_heap(self):
        # Live heap: what is still allocated right after a full collection.
        gc.collect()
        used = gc.mem_alloc()
        if used > self.heap_live_peak:
            self.heap_live_peak = used

    def finished(self):
        limit = self.cfg["max_samples"]
        return limit > 0 and self.seq >= limit and len(self.queue) == 0

    def run(self):
        while not self.finished():
            self.step()
        self.queue.persist()
        if self.mqtt.connected:
            # A graceful stop says so itself; the will is only for a lost link.
            goodbye = telemetry.death(self.state.values["bd"])
            start = ticks_ms()
            while self.mqtt.poll(10) and ticks_diff(ticks_ms(), start) < 2000:
                if self.mqtt.publish(self._topic("death"), goodbye, 1) is not None:
                    break
            self.mqtt.disconnect()
        self._measure_heap()
        # One machine-readable line for the rig's harness.
        print("SOXBMS_SUMMARY " + json.dumps({
            "device": self.device, "boot": self.boot, "samples": self.seq, "resent": self.resends,
            "dropped": self.queue.dropped, "hal_errors": self.hal_errors, "queue_head": self.queue.head,
            "link_timeouts": self.hal.link.timeouts, "link_nacks": self.hal.link.nacks,
            "link_crc_errors": self.hal.link.crc_errors,
            "heap_live_peak_bytes": self.heap_live_peak, "heap_free_bytes": gc.mem_free(),
            "estimation": self.sox is not None, "estimate_us_avg": self.estimate_us_avg,
            "estimate_us_max": self.estimate_us_max, "sample_process_us_avg": self.process_us_avg}))
