"""``display hrp state`` and ``display vrrp``: hot standby as the USG prints it (layouts from the USG
command reference; the counters section and the keepalived-reported VRRP fields are ikegate's, see
docs/ha.md)."""

from __future__ import annotations

from ikegate.gateway.device import HrpState, VrrpGroupState


def _onoff(value: bool) -> str:
    return "on" if value else "off"


def _stable(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 86400} days, {s % 86400 // 3600} hours, {s % 3600 // 60} minutes"


def state(st: HrpState, now: float, verbose: bool = False) -> list[str]:
    lines = [
        f" Role: {st.role}, peer: {st.peer_role}",
        f" Running priority: {st.priority}, peer: {st.peer_priority}",
        f" Heartbeat link: {'up' if st.link_up else 'down'}",
        f" Stable time: {_stable(now - st.stable_since) if st.stable_since is not None else _stable(0)}",
        f" Last state change information: {st.last_change or 'none'}",
    ]
    if not verbose:
        return lines
    lines += [
        "",
        " Configuration:",
        " hello interval:              1000ms",
        f" preempt:                     {f'{st.preempt_delay}s' if st.preempt else 'off'}",
        f" mirror session:              {_onoff(st.mirror_session)}",
        f" standby configuration:       {_onoff(st.standby_config)}",
        f" auto-sync configuration:     {_onoff(st.auto_sync)}",
        f" auto-sync connection-status: {_onoff(st.auto_sync)}",
        "",
        " Detail information:",
    ]
    width = max((len(f"{g.interface} vrrp vrid {g.vrid}") for g in st.vrrp), default=0)
    for g in st.vrrp:
        lines.append(f" {f'{g.interface} vrrp vrid {g.vrid}':>{width}}: {g.state.lower()}")
    lines += ["", " Backup counters:"]
    width = max((len(k) for k in st.counters), default=0)
    lines += [f" {k:<{width}}: {v}" for k, v in st.counters.items()]
    return lines


def vrrp(groups: tuple[VrrpGroupState, ...]) -> list[str]:
    """VRP's ``display vrrp`` block per group [MEM: VRP router layout]."""
    lines: list[str] = []
    for g in groups:
        lines += [
            f"  {g.interface} | Virtual Router {g.vrid}",
            f"    State : {g.state}",
            f"    Virtual IP : {g.virtual_ip}",
            f"    PriorityRun : {g.priority}",
            f"    PriorityConfig : {g.priority}",
            f"    Preempt : {'YES' if g.preempt else 'NO'}   Delay Time : {g.preempt_delay if g.preempt else 0} s",
            f"    TimerRun : {g.advert_interval} s",
            f"    TimerConfig : {g.advert_interval} s",
            "    Auth type : NONE",
            f"    Virtual MAC : 0000-5e00-01{g.vrid:02x}",
            f"    Config type : vgmp-vrrp ({'active' if g.configured_active else 'standby'})",
            "",
        ]
    return lines[:-1]
