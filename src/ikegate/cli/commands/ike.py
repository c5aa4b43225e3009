"""``ike proposal N`` and ``ike peer NAME``: creating them, and their views' commands."""

from __future__ import annotations

from ikegate.cli.commands import algorithms
from ikegate.cli.commands.settings import flag_setting, list_setting, value_setting
from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.cli.guards import refuse_if_bound, require
from ikegate.cli.params import Choice, Integer, Ipv4, Ipv6, Secret, String
from ikegate.cli.render.config import DPD_FIELDS
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewFrame, ViewKind
from ikegate.policy.model import (
    AuthenticationMethod,
    DpdSettings,
    DpdType,
    ExchangeMode,
    IdType,
    IkePeer,
    IkeProposal,
)

SYSTEM = frozenset({ViewKind.SYSTEM})
PROPOSAL = frozenset({ViewKind.IKE_PROPOSAL})
PEER = frozenset({ViewKind.IKE_PEER})

_NUMBER = {"number": Integer("IKE proposal number", 1, 99)}
_PEER_NAME = {"name": String("IKE peer name", 1, 15)}
_ADDRESS = (Ipv4("IPv4 address of the remote peer"), Ipv6("IPv6 address of the remote peer"))
_ID_TYPE = Choice({"dn": "Distinguished name of the certificate subject", "fqdn": "Fully qualified domain name",
                   "ip": "IP address", "user-fqdn": "User FQDN"})
_AUTH_METHOD = Choice({"ecdsa-signature": "ECDSA signature (certificate) authentication",
                       "pre-share": "Pre-shared key authentication",
                       "rsa-signature": "RSA signature (certificate) authentication"})


# --- ike proposal ------------------------------------------------------------------------------
def _enter_proposal(ctx: CommandContext) -> None:
    number = ctx.number("number")
    proposal = ctx.config.ike_proposals.setdefault(number, IkeProposal(number))
    ctx.session.enter_view(ViewFrame(ViewKind.IKE_PROPOSAL, f"ike-proposal-{number}", proposal))


def _delete_proposal(ctx: CommandContext) -> None:
    number = ctx.number("number")
    require(ctx, number in ctx.config.ike_proposals, f"IKE proposal {number}")
    ctx.config.ike_proposals.pop(number, None)


def _proposal(ctx: CommandContext) -> object:
    return ctx.target_as(IkeProposal)


def _fresh_proposal() -> IkeProposal:
    return IkeProposal(0)


PROPOSAL_COMMANDS = [
    Command("ike proposal <number>", _enter_proposal, SYSTEM, params=_NUMBER),
    Command("undo ike proposal <number>", _delete_proposal, SYSTEM, params=_NUMBER),
    *list_setting("encryption-algorithm", "encryption", algorithms.ENCRYPTION, PROPOSAL, _proposal, _fresh_proposal),
    *list_setting("dh", "dh", algorithms.DH, PROPOSAL, _proposal, _fresh_proposal),
    *list_setting(
        "authentication-algorithm", "authentication", algorithms.AUTHENTICATION, PROPOSAL, _proposal, _fresh_proposal
    ),
    *value_setting(
        "authentication-method",
        "authentication_method",
        _AUTH_METHOD,
        PROPOSAL,
        _proposal,
        _fresh_proposal,
        lambda v: AuthenticationMethod(v),
    ),
    *list_setting("integrity-algorithm", "integrity", algorithms.INTEGRITY, PROPOSAL, _proposal, _fresh_proposal),
    *list_setting("prf", "prf", algorithms.PRF, PROPOSAL, _proposal, _fresh_proposal),
    *value_setting(
        "sa duration",
        "duration",
        Integer("IKE SA lifetime in seconds", 60, 604800),
        PROPOSAL,
        _proposal,
        _fresh_proposal,
    ),
]


# --- ike peer ----------------------------------------------------------------------------------
def _enter_peer(ctx: CommandContext) -> None:
    name = ctx.string("name")
    peer = ctx.config.ike_peers.setdefault(name, IkePeer(name))
    ctx.session.enter_view(ViewFrame(ViewKind.IKE_PEER, f"ike-peer-{name}", peer))


def _delete_peer(ctx: CommandContext) -> None:
    name = ctx.string("name")
    require(ctx, name in ctx.config.ike_peers, f"IKE peer {name}")
    refuse_if_bound(ctx, peer=name)
    ctx.config.ike_peers.pop(name, None)


def _peer(ctx: CommandContext) -> IkePeer:
    """The peer the view edits; every peer-view command goes through here, so none can forget the
    bound-policy rule."""
    peer = ctx.target_as(IkePeer)
    refuse_if_bound(ctx, peer=peer.name)
    return peer


def _certificate_peer(ctx: CommandContext) -> IkePeer:
    """The peer, for ``certificate local-filename``: the file must be an imported local certificate
    (not checked while a configuration loads, which judges the file as a whole)."""
    peer = _peer(ctx)
    name = ctx.opt_string("value")
    if name is not None and not ctx.loading and name not in ctx.config.pki.locals:
        raise CommandError(f"Error: The local certificate {name} is not imported.")
    return peer


def _dpd(ctx: CommandContext) -> object:
    return _peer(ctx).dpd


def _add_proposal(ctx: CommandContext) -> None:
    peer = _peer(ctx)
    number = ctx.number("number")
    require(ctx, number in ctx.config.ike_proposals, f"IKE proposal {number}")
    if number not in peer.ike_proposals:
        peer.ike_proposals.append(number)


def _remove_proposal(ctx: CommandContext) -> None:
    peer = _peer(ctx)
    number = ctx.opt_number("number")
    if number is None:
        peer.ike_proposals = []
    elif number in peer.ike_proposals:
        peer.ike_proposals.remove(number)


def _add_address(ctx: CommandContext) -> None:
    peer = _peer(ctx)
    address = ctx.ip("address")
    if address not in peer.remote_addresses:
        peer.remote_addresses.append(address)


def _remove_address(ctx: CommandContext) -> None:
    peer = _peer(ctx)
    address = ctx.opt_ip("address")
    if address is None:
        peer.remote_addresses = []
    elif address in peer.remote_addresses:
        peer.remote_addresses.remove(address)


def _version(ctx: CommandContext) -> None:
    _peer(ctx).versions.add(int(ctx.string("version")))


def _undo_version(ctx: CommandContext) -> None:
    peer = _peer(ctx)
    version = int(ctx.string("version"))
    if peer.versions == {version}:
        raise CommandError("Error: At least one IKE version must be enabled on an IKE peer.")
    peer.versions.discard(version)


_VERSION = {"version": Choice({"1": "IKEv1", "2": "IKEv2"})}
_DPD_RANGES = {
    "idle-time": Integer("Idle time before a DPD probe, in seconds", 10, 3600),
    "retransmit-interval": Integer("DPD retransmission interval, in seconds", 2, 60),
    "retry-limit": Integer("DPD probes without answer before the peer is declared dead", 3, 10),
}


def _fresh_peer() -> IkePeer:
    return IkePeer("")


def _fragmentation(ctx: CommandContext) -> None:
    """USG: fragment IKEv2 messages (RFC 7383) larger than ``mtu`` (default 576 IPv4 / 1280 IPv6)."""
    mtu = ctx.values("mtu")
    _peer(ctx).ikev2_fragmentation = int(str(mtu[0])) if mtu else 0


def _undo_fragmentation(ctx: CommandContext) -> None:
    _peer(ctx).ikev2_fragmentation = None


PEER_COMMANDS = [
    Command("ike peer <name>", _enter_peer, SYSTEM, params=_PEER_NAME),
    Command("undo ike peer <name>", _delete_peer, SYSTEM, params=_PEER_NAME),
    *value_setting(
        "pre-shared-key",
        "pre_shared_key",
        Secret("Pre-shared key: 1-127 characters in clear, or the %^%#...%^%# cipher form"),
        PEER,
        _peer,
        _fresh_peer,
    ),
    Command("ike-proposal <number>", _add_proposal, PEER, params=_NUMBER),
    Command("undo ike-proposal [ <number> ]", _remove_proposal, PEER, params=_NUMBER),
    Command("remote-address <address>", _add_address, PEER, params={"address": _ADDRESS}),
    Command("undo remote-address [ <address> ]", _remove_address, PEER, params={"address": _ADDRESS}),
    Command("version <version>", _version, PEER, params=_VERSION),
    Command("undo version <version>", _undo_version, PEER, params=_VERSION),
    *value_setting(
        "exchange-mode",
        "exchange_mode",
        Choice({"aggressive": "Aggressive mode", "auto": "Main or aggressive, as the peer asks", "main": "Main mode"}),
        PEER,
        _peer,
        _fresh_peer,
        lambda v: ExchangeMode(v),
    ),
    *value_setting("local-id-type", "local_id_type", _ID_TYPE, PEER, _peer, _fresh_peer, lambda v: IdType(v)),
    *value_setting("local-id", "local_id", String("Local ID", 1, 255), PEER, _peer, _fresh_peer),
    *value_setting("remote-id-type", "remote_id_type", _ID_TYPE, PEER, _peer, _fresh_peer, lambda v: IdType(v)),
    *value_setting("remote-id", "remote_id", String("Remote ID", 1, 255), PEER, _peer, _fresh_peer),
    *value_setting(
        "dpd type",
        "type",
        Choice({"on-demand": "Probe when traffic is sent and nothing is received", "periodic": "Probe periodically"}),
        PEER,
        _dpd,
        DpdSettings,
        lambda v: DpdType(v),
    ),
    *[
        command
        for keyword, attr in DPD_FIELDS
        for command in value_setting(f"dpd {keyword}", attr, _DPD_RANGES[keyword], PEER, _dpd, DpdSettings)
    ],
    *flag_setting("ikev1 phase1-phase2 sa dependent", "ikev1_dependent", PEER, _peer),
    *flag_setting("nat traversal", "nat_traversal", PEER, _peer),
    *value_setting("certificate local-filename", "certificate_local",
                   String("File name of an imported local certificate", 1, 63), PEER, _certificate_peer, _fresh_peer),
    *flag_setting("certificate send-chain", "send_chain", PEER, _peer),
    Command("ikev2 fragmentation [ mtu <mtu> ]", _fragmentation, PEER,
            params={"mtu": Integer("MTU of IKEv2 fragments, in bytes", 200, 1500)}),
    Command("undo ikev2 fragmentation", _undo_fragmentation, PEER),
]

COMMANDS = PROPOSAL_COMMANDS + PEER_COMMANDS
