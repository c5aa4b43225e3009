"""The pieces of gateway admission alone: the structural check, the half-open table, the source guard."""

from __future__ import annotations

from ikegate.gateway import admission
from ikegate.gateway.admission import BLOCK_TIME, FAILURE_WINDOW, LOG_INTERVAL, HalfOpen, SourceGuard, opening_ok


def _message(version: int, exchange: int, payloads: list[tuple[int, bytes]], flags: int = 0) -> bytes:
    """A header and a chain of generic payloads (type, body)."""
    body = b""
    for i, (_kind, data) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        body += bytes((nxt, 0)) + (4 + len(data)).to_bytes(2, "big") + data
    first = payloads[0][0] if payloads else 0
    return (bytes(8) * 2 + bytes((first, version << 4, exchange, flags)) + bytes(4)
            + (28 + len(body)).to_bytes(4, "big") + body)


def test_opening_ok_checks_structure_and_required_payloads() -> None:
    v2 = _message(2, 34, [(33, b"sa"), (34, b"ke"), (40, b"nonce")], flags=0x08)
    assert opening_ok(v2, 2)
    assert not opening_ok(_message(2, 34, [(33, b"sa"), (40, b"nonce")], flags=0x08), 2)  # no KE
    assert not opening_ok(v2[:-1], 2)  # length field no longer matches
    assert not opening_ok(v2[:24] + (len(v2) + 4).to_bytes(4, "big") + v2[28:] + bytes(4), 2)  # chain ends early
    bad_len = bytearray(v2)
    bad_len[30:32] = (2).to_bytes(2, "big")  # a payload shorter than its own header
    assert not opening_ok(bytes(bad_len), 2)
    mid = bytearray(v2)
    mid[23] = 1  # message ID 1
    assert not opening_ok(bytes(mid), 2)
    assert opening_ok(_message(1, 2, [(1, b"sa"), (13, b"vid")]), 1)
    assert not opening_ok(_message(1, 2, [(13, b"vid")]), 1)  # Main Mode without SA
    assert not opening_ok(_message(1, 2, [(1, b"sa")], flags=1), 1)  # encrypted
    assert opening_ok(_message(1, 4, [(1, b"sa"), (4, b"ke"), (10, b"n"), (5, b"id")]), 1)
    assert not opening_ok(_message(1, 4, [(1, b"sa"), (4, b"ke")]), 1)  # Aggressive Mode needs Nonce and ID
    assert not opening_ok(_message(1, 5, [(1, b"sa")]), 1)  # not an opening exchange
    assert not opening_ok(b"\0" * 27, 2)


def test_half_open_table_counts_sources_and_expires() -> None:
    table: HalfOpen[str] = HalfOpen(lifetime=10.0)
    table.add("192.0.2.1", b"a" * 8, "e1", 0.0)
    table.add("192.0.2.1", b"b" * 8, "e2", 1.0)
    table.add("192.0.2.2", b"c" * 8, "e3", 2.0)
    assert len(table) == 3 and table.from_source("192.0.2.1") == 2 and table.get("192.0.2.2", b"c" * 8) == "e3"
    table.discard("e1")
    table.discard("e1")  # twice is harmless
    assert table.from_source("192.0.2.1") == 1 and table.next_deadline() == 11.0
    assert list(table.expired(11.5)) == ["e2"]
    assert table.from_source("192.0.2.1") == 0 and len(table) == 1
    assert list(table.expired(100.0)) == ["e3"] and table.next_deadline() is None


def test_half_open_deadlines_of_departed_entries_do_not_pile_up() -> None:
    table: HalfOpen[int] = HalfOpen()
    for i in range(100000):
        table.add("198.51.100.1", i.to_bytes(8, "big"), i, 0.0)
        table.discard(i)  # an engine that ended at once
    assert len(table) == 0 and len(table._expiry) <= 1024 + 1


def test_source_guard_blocks_after_the_limit_and_logs_once_per_interval() -> None:
    guard = SourceGuard()
    assert not any(guard.auth_failed("192.0.2.9", t, 3) for t in (0.0, 1.0, 2.0))
    assert guard.auth_failed("192.0.2.9", 3.0, 3)
    assert guard.blocked("192.0.2.9", 3.0 + BLOCK_TIME - 1) and not guard.blocked("192.0.2.9", 3.0 + BLOCK_TIME)
    assert not guard.blocked("192.0.2.10", 4.0)
    counts = [guard.note_drop("192.0.2.9", 4.0 + i * 0.01) for i in range(1000)]
    assert counts[0] == 1 and counts[1:] == [None] * 999
    assert guard.note_drop("192.0.2.9", 4.0 + LOG_INTERVAL) == 1000
    # failures spread wider than the window never add up
    slow = SourceGuard()
    assert not any(slow.auth_failed("192.0.2.8", i * FAILURE_WINDOW, 1) for i in range(10))


def test_source_guard_is_bounded() -> None:
    guard = SourceGuard()
    for i in range(admission.MAX_SOURCES + 500):
        guard.note_drop(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert len(guard) == admission.MAX_SOURCES
    guard.forget_idle(LOG_INTERVAL + 1)
    assert len(guard) == 0


def test_admission_commands_in_the_shell_and_current_configuration() -> None:
    from ikegate.cli.commands import default_tree
    from ikegate.cli.shell import Shell
    from ikegate.policy.model import Config

    config = Config()
    shell = Shell(config, tree=default_tree())
    shell.execute("system-view")
    assert shell.execute("ike call admission limit in-negotiation-sa per-address 8").ok
    assert shell.execute("ike call ad li auth 4").ok  # abbreviated
    assert (config.ike_admission.per_address, config.ike_admission.authentication_failures) == (8, 4)
    bad = shell.execute("ike call admission limit in-negotiation-sa 100001")
    assert not bad.ok and bad.error is not None
    text = shell.execute("display current-configuration").text
    assert " ike call admission limit in-negotiation-sa per-address 8" in text
    assert " ike call admission limit authentication-failure 4" in text
    assert "in-negotiation-sa 5000" not in text  # defaults are left out
    from ikegate.cli.matcher import help_items
    from ikegate.cli.views import ViewKind

    items = help_items(shell.tree, ViewKind.SYSTEM, 3, "ike call admission limit ")
    assert isinstance(items, list)
    assert {i.name for i in items} == {"authentication-failure", "in-negotiation-sa"}
    items = help_items(shell.tree, ViewKind.SYSTEM, 3, "ike call admission limit in-negotiation-sa ")
    assert isinstance(items, list) and {i.name for i in items} == {"per-address", "INTEGER<1-100000>"}


def test_cookie_and_nonce_read_off_the_chain() -> None:
    from ikegate.gateway.admission import cookie_and_nonce

    cookie_notify = bytes((0, 0)) + (16390).to_bytes(2, "big") + b"C" * 17
    with_cookie = _message(2, 34, [(41, cookie_notify), (33, b"sa"), (34, b"ke"), (40, b"nonce")], flags=0x08)
    assert opening_ok(with_cookie, 2) and cookie_and_nonce(with_cookie) == (b"C" * 17, b"nonce")
    plain = _message(2, 34, [(33, b"sa"), (34, b"ke"), (40, b"nonce")], flags=0x08)
    assert cookie_and_nonce(plain) == (None, b"nonce")
    # A COOKIE anywhere but first does not count (RFC 7296 §2.6), nor another notify type first.
    late = _message(2, 34, [(33, b"sa"), (41, cookie_notify), (34, b"ke"), (40, b"nonce")], flags=0x08)
    other = bytes((0, 0)) + (16388).to_bytes(2, "big") + b"x" * 20
    assert cookie_and_nonce(late)[0] is None
    assert cookie_and_nonce(_message(2, 34, [(41, other), (33, b"sa"), (34, b"ke"), (40, b"n")], flags=0x08))[0] is None


def test_source_guard_remembers_proof_for_a_while() -> None:
    guard = SourceGuard()
    assert not guard.proven("192.0.2.1", 0.0)
    guard.prove("192.0.2.1", 0.0)
    assert guard.proven("192.0.2.1", admission.PROVEN_TIME - 1) and not guard.proven("192.0.2.2", 1.0)
    guard.forget_idle(1.0)
    assert guard.proven("192.0.2.1", 2.0)  # not forgotten while the proof holds
    assert not guard.proven("192.0.2.1", admission.PROVEN_TIME + 1)
    guard.forget_idle(admission.PROVEN_TIME + LOG_INTERVAL + 1)
    assert len(guard) == 0
