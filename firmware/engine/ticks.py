# Millisecond wall ticks: MicroPython's wrapping ticks, or CPython's monotonic clock when firmware
# modules run under CPython in host-side tests.

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:
    from time import monotonic_ns, sleep

    def ticks_ms():
        return monotonic_ns() // 1000000

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        sleep(ms / 1000)
