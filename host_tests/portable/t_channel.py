# Pure parts of meerkat_rt.channel: the reconnect backoff (full jitter, capped, growing).
from meerkat_rt.channel import backoff_ms


def test_backoff_is_full_jitter_under_a_growing_cap():
    top = lambda n: n - 1  # the largest draw the random source can give  # noqa: E731
    zero = lambda n: 0  # noqa: E731
    ceilings = [backoff_ms(a, 500, 5000, top) for a in range(1, 8)]
    assert ceilings == [500, 1000, 2000, 4000, 5000, 5000, 5000], ceilings
    assert [backoff_ms(a, 500, 5000, zero) for a in range(1, 8)] == [0] * 7
    assert backoff_ms(40, 500, 5000, top) == 5000  # no overflow for long outages
    assert backoff_ms(1, 500, 300, top) == 300  # the cap wins over the initial delay


def test_backoff_draws_spread_over_the_range():
    from meerkat_rt.channel import _randint

    draws = [backoff_ms(3, 500, 5000, _randint) for _ in range(400)]
    assert min(draws) >= 0 and max(draws) <= 2000
    assert min(draws) < 400 and max(draws) > 1600  # spread: the jitter is real
