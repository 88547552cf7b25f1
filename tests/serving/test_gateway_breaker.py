"""The breaker's two trip rules, on a fake clock: a failure rate over the window, and a run of
consecutive failures (a crash, which a long window of earlier successes would dilute)."""

from __future__ import annotations

from serving.gateway.breaker import BreakerBoard
from serving.routing import BreakerPolicy

KEY = ("m", "global", 2)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def board(clock: Clock, trips: list[object]) -> BreakerBoard:
    return BreakerBoard(
        on_trip=lambda k, s: trips.append((k, s.failures, s.requests)),
        clock=clock,
        monotonic=clock,
    )


def test_a_crash_after_many_successes_trips_on_the_streak() -> None:
    clock, trips = Clock(), []
    b = board(clock, trips)
    policy = BreakerPolicy(window_s=10, min_requests=20, max_error_rate=0.2, consecutive_failures=5)
    for _ in range(300):  # a healthy canary at 30 rps for 10 s
        clock.t += 0.033
        b.record(KEY, "canary", policy, failed=False)
    for i in range(5):
        assert b.allows(KEY), f"tripped early, after {i} failures"
        clock.t += 0.033
        b.record(KEY, "canary", policy, failed=True)
    assert not b.allows(KEY)
    [(key, failures, requests)] = trips
    assert (key, failures) == (KEY, 5) and requests > 290  # the rate rule would need ~75


def test_scattered_failures_never_make_a_streak_and_the_rate_rule_still_counts() -> None:
    clock, trips = Clock(), []
    b = board(clock, trips)
    policy = BreakerPolicy(window_s=10, min_requests=20, max_error_rate=0.2, consecutive_failures=5)
    for i in range(100):  # every 4th fails: 25% > 20%, never 5 in a row
        clock.t += 0.01
        b.record(KEY, "canary", policy, failed=i % 4 == 3)
    assert trips and trips[0][1] < 5 + trips[0][2] // 4
    assert not b.allows(KEY)


def test_the_streak_rule_can_be_turned_off() -> None:
    clock, trips = Clock(), []
    b = board(clock, trips)
    policy = BreakerPolicy(window_s=10, min_requests=20, max_error_rate=0.5, consecutive_failures=0)
    for _ in range(19):
        clock.t += 0.01
        b.record(KEY, "canary", policy, failed=True)
    assert b.allows(KEY) and trips == []  # below min_requests, no streak rule
    b.record(KEY, "canary", policy, failed=True)
    assert not b.allows(KEY)
