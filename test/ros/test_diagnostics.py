"""What the node writes to its log about peers' input: escaped, cut, and limited per class of error."""
from semseg_ros.diagnostics import RateLimiter, printable


def test_printable_escapes_control_and_non_ascii_and_cuts_long_text():
    forged = "cam\n[ERROR] [0.0] [perception_node]: forged\x1b[31m\u00b2"
    text = printable(forged)
    assert "\n" not in text and "\x1b" not in text and text.isascii()
    assert text == "'cam\\n[ERROR] [0.0] [perception_node]: forged\\x1b[31m\\xb2'"
    long = printable("x" * 100_000, limit=64)
    assert long == "'" + "x" * 64 + "'... (100000 characters)"
    assert printable("a\tb", quote=False) == "a\\tb"


class FakeClock:
    """A hand-set time source (the limiter's only input besides the keys)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rate_limiter_admits_one_event_per_key_per_period_and_counts_the_rest():
    clock = FakeClock()
    limiter = RateLimiter(period_s=1.0, clock=clock)
    assert limiter.admit("size") == 0
    assert [limiter.admit("size") for _ in range(5)] == [None] * 5   # same class, varied texts: muted
    assert limiter.admit("encoding") == 0                              # another class: at once
    clock.now = 0.99
    assert limiter.admit("size") is None
    clock.now = 1.0
    assert limiter.admit("size") == 6                                  # the next line says 6 were held back
    assert limiter.admit("size") is None
    clock.now = 5.0
    assert limiter.admit("size") == 1 and limiter.admit("encoding") == 0
