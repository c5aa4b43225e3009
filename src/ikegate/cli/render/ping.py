"""``ping``: VRP's echo transcript from what the device measured (:class:`~ikegate.gateway.device.PingResult`).

The device only measures (one round-trip time or a timeout per request); the wording and layout are the
CLI's, here beside the other renderers, so a fan-out device or a test can produce a result without
knowing how VRP prints it.
"""

from __future__ import annotations

from ikegate.gateway.device import PingResult


def render(result: PingResult) -> list[str]:
    dest, size, count = result.destination, result.size, len(result.rtts)
    lines = [f"  PING {dest}: {size}  data bytes, press CTRL_C to break"]
    for seq, rtt in enumerate(result.rtts, start=1):
        if rtt is None:
            lines.append("    Request time out")
        else:
            lines.append(f"    Reply from {dest}: bytes={size} Sequence={seq} ttl=64 time={rtt:.0f} ms")
    times = result.received
    lines += ["", f"  --- {dest} ping statistics ---", f"    {count} packet(s) transmitted",
              f"    {len(times)} packet(s) received",
              f"    {100 * (count - len(times)) / count if count else 0.0:.2f}% packet loss"]
    if times:
        lines.append(f"    round-trip min/avg/max = {min(times):.0f}/{sum(times) / len(times):.0f}/{max(times):.0f} ms")
    return lines
