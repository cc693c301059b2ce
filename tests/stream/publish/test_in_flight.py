"""PublishInFlight: one job at a time, in order, its error raised in the handing thread."""

from __future__ import annotations

import threading

import pytest

from stream.publish.in_flight import PublishInFlight

WAIT_S = 10.0


def test_a_second_hand_waits_for_the_job_in_flight_and_jobs_run_in_order() -> None:
    publishing = PublishInFlight()
    release, started, order = threading.Event(), threading.Event(), []

    def first() -> None:
        started.set()
        assert release.wait(WAIT_S)
        order.append(1)

    publishing.hand(first)
    assert started.wait(WAIT_S)
    assert publishing.busy()
    handed = threading.Event()

    def hand_second() -> None:
        publishing.hand(lambda: order.append(2))
        handed.set()

    threading.Thread(target=hand_second, daemon=True).start()
    assert not handed.wait(0.3)  # the first is still in flight: the second waits
    assert order == []
    release.set()
    assert handed.wait(WAIT_S)
    publishing.wait()
    assert order == [1, 2]
    assert not publishing.busy()


def test_the_job_runs_outside_the_handing_thread_which_goes_on() -> None:
    publishing = PublishInFlight()
    release, ran_in = threading.Event(), []

    def job() -> None:
        ran_in.append(threading.current_thread().name)
        assert release.wait(WAIT_S)

    publishing.hand(job)  # returns while the job waits
    release.set()
    publishing.wait()
    assert ran_in == ["streamgnn-publisher"]


def test_an_error_is_raised_once_by_the_next_wait_or_hand() -> None:
    publishing = PublishInFlight()

    def fail() -> None:
        raise ValueError("version went back")

    publishing.hand(fail)
    with pytest.raises(ValueError, match="version went back"):
        publishing.wait()
    publishing.wait()  # raised once
    publishing.hand(fail)
    ran = []
    with pytest.raises(ValueError):
        publishing.hand(lambda: ran.append(1))  # the failed one's error, not started
    publishing.wait()
    assert ran == []
