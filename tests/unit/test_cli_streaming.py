"""Large displays are rendered a chunk at a time and the drivers let the event loop run between chunks
(issue 13: the management plane never stalls negotiation). Proven by counting chunks, loop turns and
pacer waits, never by timing."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import math
from collections.abc import Iterator
from importlib import resources

import pytest

from ikegate.cli.filters import COUNT_FORMAT, OutputFilter, compile_regex
from ikegate.cli.loader import load_config
from ikegate.cli.pager import MORE
from ikegate.cli.render import ike_info, ike_sa, ipsec_sa
from ikegate.cli.render.chunks import CHUNK_ROWS, Records, flatten, json_chunks
from ikegate.cli.shell import Shell
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import make_device
from ikegate.mgmt.pacing import Pacer, chunks_paced, pump
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Role, SaFlag, placement_for
from tests.conftest import device_shell, gateway_for

IKE_SAS = 1_600  # each with one IPsec SA: 3,200 rows, 7 chunks of CHUNK_ROWS


def _gateway(ike_sas: int = IKE_SAS) -> Gateway:
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    model = make_device("USG6680E", None)
    gw = gateway_for(config, model)
    local = ipaddress.ip_address("127.0.0.11")
    for i in range(ike_sas):
        peer = ipaddress.ip_address(0x0A000000 + i)
        spi_i = (i + 1).to_bytes(8, "big")
        ike = gw.sad.add_ike(IkeSaEntry(
            version=2 if i % 3 else 1, role=Role.RESPONDER, flags=SaFlag.RD | SaFlag.A,
            placement=placement_for(peer, 500, spi_i, model.placements), local_address=local, peer_address=peer,
            peer_id=f"peer-{i}.example" if i % 7 == 0 else "", spi_i=spi_i, spi_r=spi_i))
        gw.sad.add_ipsec(IpsecSaEntry.from_parent(ike, flags=SaFlag.RD | SaFlag.A, spi_in=1000 + i, spi_out=5000 + i))
    return gw


@pytest.fixture(scope="module")
def gw() -> Gateway:
    return _gateway()


def _shell(gw: Gateway, **options: object) -> Shell:
    return device_shell(gw, make_device("USG6680E", None), shell=dict(options))


def test_display_ike_sa_renders_one_chunk_per_resume(gw: Gateway) -> None:
    shell = _shell(gw)
    echo = shell.receive(b"display ike sa | no-more\r")
    assert echo == b"display ike sa | no-more\r\n"  # nothing rendered yet
    assert shell.streaming
    steps, out = 0, bytearray()
    while shell.streaming:
        out += shell.resume()
        steps += 1
    rows = 2 * IKE_SAS
    # the timestamp line, the header, ceil(rows / CHUNK_ROWS) row chunks, the trailer, the end of the source
    assert steps == 1 + 1 + math.ceil(rows / CHUNK_ROWS) + 1 + 1
    text = out.decode()
    assert text.count("\r\n") == 1 + 4 + rows + 4 + len(ike_sa.LEGEND)
    assert text.endswith("<HQ>")
    # the same text as rendering everything at once
    assert text.split("\r\n")[1:-1] == ike_sa.render(gw.sad.select())


def test_rows_are_the_same_whatever_the_chunk_size(gw: Gateway) -> None:
    entries = gw.sad.select()
    one_by_one = list(ike_sa.chunks(entries, size=1))
    assert len(one_by_one) == len(entries) + 2
    assert flatten(one_by_one) == ike_sa.render(entries)
    ipsec = [e for e in entries if isinstance(e, IpsecSaEntry)][:50]
    assert flatten(ipsec_sa.chunks(ipsec, 0.0, size=1)) == ipsec_sa.render(ipsec, 0.0)
    assert len(list(ipsec_sa.brief_chunks(ipsec, size=7))) == 1 + math.ceil(50 / 7)
    assert flatten(ipsec_sa.brief_chunks(ipsec, size=7)) == ipsec_sa.render_brief(ipsec)


def test_a_long_or_odd_cell_pushes_the_row_as_before() -> None:
    gw = _gateway(2)
    entry = gw.sad.select()[0]
    entry.peer_id = "a-very-long-remote-identity.example.com"
    fitted = ike_sa.row(entry)
    assert fitted.startswith(f" {entry.conn_id:<11}") and " a-very-long-remote-identity.example.com" in fitted


def test_verbose_in_chunks_is_the_whole_verbose(gw: Gateway) -> None:
    shell = _shell(gw)
    out = shell.execute("display ike sa verbose remote 10.0.0.77").lines
    entries = gw.sad.select(remote="10.0.0.77", phase=1)
    children = {e.conn_id: gw.sad.children(e.conn_id) for e in entries}
    assert out[1:] == [line.rstrip() for line in ike_info.verbose(entries, children, 0.0)]


def test_the_pager_renders_only_the_screens_shown(gw: Gateway) -> None:
    shell = _shell(gw)
    first = shell.feed(b"display ike sa\r").decode()
    assert first.endswith(MORE)
    output = shell._output
    assert output is not None and output.waiting
    assert output.steps == 3  # the timestamp, the header, one chunk of rows: not the 7 chunks of the table
    shell.feed(b" ")
    assert output.steps == 3  # the next screen came from the chunk already rendered
    assert shell.feed(b"q").decode().endswith("<HQ>")
    assert shell._output is None and output.steps == 3  # stopped: the rest is never rendered


def test_ctrl_c_stops_a_display_being_rendered(gw: Gateway) -> None:
    shell = _shell(gw)
    shell.receive(b"display ike sa | no-more\r")
    shell.resume()
    shell.resume()
    assert shell.streaming
    out = shell.receive(b"\x03")
    assert not shell.streaming and out == b"<HQ>"
    assert shell.feed(b"display ike proposal\r").startswith(b"display ike proposal\r\n\r\nNumber of IKE Proposals")


def test_keys_typed_during_a_display_wait_their_turn(gw: Gateway) -> None:
    shell = _shell(gw)
    shell.receive(b"display ike sa | count\r")
    assert shell.receive(b"dis ike sa | count\r") == b""  # not echoed while the first one renders
    out = bytearray()
    while shell.streaming:
        out += shell.resume()
    text = out.decode()
    count = COUNT_FORMAT.format(1 + 4 + 2 * IKE_SAS + 4 + len(ike_sa.LEGEND))
    assert text.count(count) == 2
    assert text.index(count) < text.index("dis ike sa | count\r\n")


def test_count_and_include_yield_between_chunks() -> None:
    source = [["a1", "b1"], ["b2", "b3"], ["a4"]]
    counted = list(OutputFilter("count").chunks(source))
    assert counted == [[], [], [], [COUNT_FORMAT.format(5)]]
    assert list(OutputFilter("include", compile_regex("a")).chunks(source)) == [["a1"], [], ["a4"]]
    assert list(OutputFilter("begin", compile_regex("b2")).chunks(source)) == [[], ["b2", "b3"], ["a4"]]


@pytest.mark.parametrize("data", [
    {"ike_sa": Records(list(range(7)), lambda i: {"n": i, "s": str(i), "l": [i, None]})},
    {"ike_sa": Records([], lambda i: i)},
    {"a": 1, "ike_sa": Records([1, 2], lambda i: {"x": i}), "z": {"k": [1]}},
    {"lines": ["x", "y"]},
])
def test_json_chunks_are_json_dumps(data: dict[str, object]) -> None:
    plain = {k: list(v) if isinstance(v, Records) else v for k, v in data.items()}
    assert flatten(json_chunks(data, size=3)) == json.dumps(plain, indent=1, default=str).splitlines()


def test_display_json_streams_records(gw: Gateway) -> None:
    shell = _shell(gw)
    outcome = shell.run("display ike sa | json", lazy=True)
    assert outcome.more is not None
    chunks = list(outcome.more)
    assert len(chunks) == 2 + math.ceil(2 * IKE_SAS / CHUNK_ROWS) + 2  # "{", the key, records, "]", "}"
    records = json.loads("\n".join(flatten(chunks)))["ike_sa"]
    assert [r["conn_id"] for r in records] == [e.conn_id for e in gw.sad.select()]


def test_displays_do_not_ask_the_device_to_take_the_configuration(gw: Gateway) -> None:
    shell = _shell(gw)
    shell.execute("display ike sa remote 10.0.0.1")
    assert not shell.take_changes()
    shell.execute("system-view")
    assert shell.take_changes() and not shell.take_changes()


# -- the drivers: the loop runs between chunks ----------------------------------------------------------


def _watched(chunks: int, ticks: list[int], seen: list[int]) -> Iterator[list[str]]:
    """``chunks`` one-line chunks, noting the neighbour's tick count when each is rendered."""
    for i in range(chunks):
        seen.append(ticks[0])
        yield [f"line {i}"]


async def _neighbour(ticks: list[int], stop: asyncio.Event, work: float = 0.0,
                     clock: list[float] | None = None, idle: float = 0.0, busy_passes: int | None = None) -> None:
    """Another task on the loop (negotiation's stand-in): one tick per loop pass, each ``work`` fake CPU
    seconds (only the first ``busy_passes`` if given) plus ``idle`` fake seconds of waiting (``clock``:
    [CPU, wall])."""
    while not stop.is_set():
        ticks[0] += 1
        if clock is not None:
            cpu = work if busy_passes is None or ticks[0] <= busy_passes else 0.0
            clock[0] += cpu
            clock[1] += cpu + idle
        await asyncio.sleep(0)


def test_another_task_runs_between_any_two_chunks() -> None:
    async def main() -> tuple[list[int], list[str], Pacer]:
        ticks, seen, stop = [0], [], asyncio.Event()
        neighbour = asyncio.create_task(_neighbour(ticks, stop))
        pace = Pacer()
        got = [line async for chunk in chunks_paced(_watched(40, ticks, seen), pace) for line in chunk]
        stop.set()
        await neighbour
        return seen, got, pace

    seen, got, pace = asyncio.run(main())
    assert got == [f"line {i}" for i in range(40)]
    assert all(b > a for a, b in itertools.pairwise(seen))  # the neighbour ran between every two chunks
    assert pace.turns == 41  # one turn per chunk, and one that found the source exhausted


def test_chunks_of_concurrent_sessions_take_turns() -> None:
    async def main() -> list[str]:
        order: list[str] = []
        pace = Pacer()

        async def session(name: str) -> None:
            source = ([f"{name}{i}"] for i in range(5))
            async for chunk in chunks_paced(source, pace):
                order.extend(chunk)

        await asyncio.gather(session("a"), session("b"))
        return order

    order = asyncio.run(main())
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]  # FIFO turns, no session hogs


@pytest.mark.parametrize(("work", "idle", "busy_passes", "waits"), [
    (0.0, 0.0003, None, 0),  # nothing else to do
    (0.00005, 0.0003, None, 0),  # the loop's own bookkeeping, an SSH window update: not other work
    (0.0006, 0.0003, None, 10),  # negotiation: every turn after a chunk waits
    (0.0006, 0.0003, 1, 10),  # work seen once: the loop counts as busy for the horizon, not one pass
])
def test_the_pacer_waits_only_when_the_loop_is_busy(work: float, idle: float, busy_passes: int | None,
                                                     waits: int) -> None:
    """Fake clocks: each chunk costs 1 ms, the neighbour ``work`` of CPU and ``idle`` of waiting per loop
    pass. Only a busy loop makes chunks wait."""

    async def main() -> Pacer:
        clock, ticks, stop = [0.0, 0.0], [0], asyncio.Event()  # CPU, wall
        pace = Pacer(share=0.5, horizon=10.0, clock=lambda: clock[0], wall=lambda: clock[1])

        def costly() -> Iterator[list[str]]:
            for i in range(10):
                clock[0] += 0.001
                clock[1] += 0.001
                yield [str(i)]

        neighbour = asyncio.create_task(_neighbour(ticks, stop, work, clock, idle, busy_passes))
        async for _ in chunks_paced(costly(), pace):
            pass
        stop.set()
        await neighbour
        return pace

    pace = asyncio.run(main())
    assert pace.turns == 11
    # busy: every turn after a chunk waits (share 0.5: until 1 ms has passed since the chunk ended)
    assert pace.waits == waits


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.drains = 0

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        self.drains += 1


def test_pump_drains_between_chunks_and_applies_only_changes(gw: Gateway) -> None:
    async def main() -> tuple[_Writer, list[int], Pacer]:
        shell = _shell(gw)
        writer, applied, pace = _Writer(), [0], Pacer()

        def after() -> None:
            applied[0] += 1

        await pump(shell, b"screen-length 0 temporary\r", writer.write, writer.drain, after, pace)
        before = writer.drains
        await pump(shell, b"display ike sa\r", writer.write, writer.drain, after, pace)
        writer.drains -= before
        return writer, applied, pace

    writer, applied, pace = asyncio.run(main())
    text = writer.data.decode()
    assert f"Number of IKE SA : {2 * IKE_SAS}" in text and text.endswith("<HQ>") and MORE not in text
    chunks = 1 + 1 + math.ceil(2 * IKE_SAS / CHUNK_ROWS) + 1 + 1
    assert writer.drains == chunks + 1  # after every chunk, and once at the end
    assert applied == [1]  # screen-length, not the display
