"""The checker itself: it must reject what no single register could do."""

from __future__ import annotations

from tests.support.linearizability import Op, linearizable


def test_accepts_concurrent_reads_of_either_value() -> None:
    history = [Op("put", 0, 1, value=1), Op("put", 2, 5, value=2), Op("get", 3, 4, output=1),
               Op("get", 3.5, 6, output=2)]
    assert linearizable(history)


def test_rejects_a_stale_read_after_a_completed_write() -> None:
    history = [Op("put", 0, 1, value=1), Op("put", 2, 3, value=2), Op("get", 4, 5, output=1)]
    assert not linearizable(history)


def test_rejects_two_winning_cas_on_the_same_expectation() -> None:
    history = [Op("put", 0, 1, value=0), Op("cas", 2, 4, expected=0, value=1, output=True),
               Op("cas", 2, 4, expected=0, value=2, output=True)]
    assert not linearizable(history)


def test_accepts_one_winner_and_one_loser() -> None:
    history = [Op("put", 0, 1, value=0), Op("cas", 2, 4, expected=0, value=1, output=True),
               Op("cas", 2, 4, expected=0, value=2, output=False), Op("get", 5, 6, output=1)]
    assert linearizable(history)
