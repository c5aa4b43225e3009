"""RequestWindow alone: back-off, give-up, DPD's fixed interval, and the queue behind the window
(the way aioquic's test_recovery.py tests its loss detection without a connection)."""

from __future__ import annotations

from ikegate.ike.core.config import IkeSaConfig
from ikegate.ike.core.window import (
    DEFAULT_RETRANSMIT_BASE,
    DEFAULT_RETRANSMIT_TRIES,
    RequestWindow,
    Retransmission,
)


def _cfg(base: float = 0.5, tries: int = 3) -> IkeSaConfig:
    return IkeSaConfig([], b"k", (1, bytes(4)), retransmit_base=base, retransmit_tries=tries)


def _run_out(window: RequestWindow, req: Retransmission, cfg: IkeSaConfig | None) -> list[float]:
    """Fire ``req`` at each deadline until it gives up; the times it was sent again."""
    sent: list[float] = []
    while window.fire(req, req.deadline, cfg):
        sent.append(req.deadline)
        assert len(sent) < 50
    return sent


def test_arm_sets_first_deadline_and_tries_from_config() -> None:
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 10.0, _cfg(0.5, 3))
    assert (req.deadline, req.tries, req.max_tries) == (10.5, 0, 3)


def test_backoff_doubles_and_gives_up_after_tries() -> None:
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 0.0, _cfg(1.0, 3))
    deadlines = []
    now = req.deadline
    while w.fire(req, now, _cfg(1.0, 3)):
        deadlines.append(req.deadline)
        now = req.deadline
    # sent at 1, then 1+2=3, then 3+4=7, then 7+8=15; the fourth deadline is the give-up point
    assert deadlines == [3.0, 7.0, 15.0]
    assert req.tries == 3
    assert not w.fire(req, now, _cfg(1.0, 3))  # spent stays spent


def test_max_tries_caps_the_configured_tries() -> None:
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 0.0, _cfg(1.0, 5), max_tries=1)
    assert req.max_tries == 1
    assert w.fire(req, 1.0, None) and not w.fire(req, req.deadline, None)
    wide = w.arm(Retransmission(b"p", lambda t: None), 0.0, _cfg(1.0, 2), max_tries=9)
    assert wide.max_tries == 2


def test_responder_without_config_uses_defaults() -> None:
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 0.0, None)
    assert req.deadline == DEFAULT_RETRANSMIT_BASE and req.max_tries == DEFAULT_RETRANSMIT_TRIES
    assert len(_run_out(w, req, None)) == DEFAULT_RETRANSMIT_TRIES


def test_fixed_interval_for_dpd() -> None:
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 0.0, _cfg(1.0, 3))
    req.interval = 15.0
    now = req.deadline
    gaps = []
    while w.fire(req, now, _cfg(1.0, 3)):
        gaps.append(req.deadline - now)
        now = req.deadline
    assert gaps == [15.0, 15.0, 15.0]


def test_config_learned_later_changes_the_backoff() -> None:
    """A responder learns its peer configuration at authentication: later retries use it."""
    w = RequestWindow()
    req = w.arm(Retransmission(b"p", lambda t: None), 0.0, None)
    assert w.fire(req, 1.0, _cfg(3.0, 5))
    assert req.deadline == 1.0 + 3.0 * 2


def test_pump_runs_tasks_in_order_while_ready() -> None:
    w = RequestWindow()
    ran: list[str] = []
    open_ = [True]

    def task(name: str, closes: bool = False):  # type: ignore[no-untyped-def]
        def run(now: float) -> None:
            ran.append(f"{name}@{now}")
            if closes:
                open_[0] = False
        return run

    w.queue(task("a"))
    w.queue(task("b", closes=True))  # sends a request: the window closes
    w.queue(task("c"))
    w.queue_first(task("first"))
    w.pump(5.0, lambda: open_[0])
    assert ran == ["first@5.0", "a@5.0", "b@5.0"]
    assert len(w) == 1 and w
    open_[0] = True
    w.pump(6.0, lambda: open_[0])
    assert ran[-1] == "c@6.0" and not w


def test_pump_does_nothing_while_closed() -> None:
    w = RequestWindow()
    ran: list[float] = []
    w.queue(ran.append)
    w.pump(1.0, lambda: False)
    assert ran == [] and len(w) == 1


def test_take_all_empties_before_running() -> None:
    """IKEv1 releases its queued Quick Modes in one go; one queued meanwhile waits for the next release."""
    w = RequestWindow()
    w.queue(lambda t: w.queue(lambda t2: None))
    tasks = w.take_all()
    assert not w
    for t in tasks:
        t(0.0)
    assert len(w) == 1
    w.clear()
    assert not w
