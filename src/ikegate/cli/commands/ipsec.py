"""``ipsec proposal``, ``ipsec policy`` (ISAKMP) and ``ipsec policy-template``, with their views."""

from __future__ import annotations

from ikegate.cli.commands import algorithms
from ikegate.cli.commands.settings import list_setting, value_setting
from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError, ErrorKind, ParamError
from ikegate.cli.guards import refuse_if_bound, require
from ikegate.cli.params import Choice, Integer, String
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewFrame, ViewKind
from ikegate.policy.model import (
    EncapsulationMode,
    IpsecPolicy,
    IpsecPolicySettings,
    IpsecPolicyTemplate,
    IpsecProposal,
    TriggerMode,
)

SYSTEM = frozenset({ViewKind.SYSTEM})
PROPOSAL = frozenset({ViewKind.IPSEC_PROPOSAL})
POLICY = frozenset({ViewKind.IPSEC_POLICY})
POLICY_OR_TEMPLATE = frozenset({ViewKind.IPSEC_POLICY, ViewKind.IPSEC_TEMPLATE})
MAX_PROPOSALS = 12

_PROPOSAL_NAME = {"name": String("IPSec proposal name", 1, 15)}
_POLICY = {
    "name": String("IPSec policy name", 1, 15),
    "seq": Integer("Sequence number of the IPSec policy", 1, 10000),
    "template": String("IPSec policy template name", 1, 15),
}
_TEMPLATE = {
    "name": String("IPSec policy template name", 1, 15),
    "seq": Integer("Sequence number of the IPSec policy template", 1, 10000),
}


# --- ipsec proposal ----------------------------------------------------------------------------
def _enter_proposal(ctx: CommandContext) -> None:
    name = ctx.string("name")
    proposal = ctx.config.ipsec_proposals.setdefault(name, IpsecProposal(name))
    ctx.session.enter_view(ViewFrame(ViewKind.IPSEC_PROPOSAL, f"ipsec-proposal-{name}", proposal))


def _delete_proposal(ctx: CommandContext) -> None:
    name = ctx.string("name")
    require(ctx, name in ctx.config.ipsec_proposals, f"IPSec proposal {name}")
    ctx.config.ipsec_proposals.pop(name, None)


def _proposal(ctx: CommandContext) -> object:
    return ctx.target_as(IpsecProposal)


def _fresh_proposal() -> IpsecProposal:
    return IpsecProposal("")


PROPOSAL_COMMANDS = [
    Command("ipsec proposal <name>", _enter_proposal, SYSTEM, params=_PROPOSAL_NAME),
    Command("undo ipsec proposal <name>", _delete_proposal, SYSTEM, params=_PROPOSAL_NAME),
    *value_setting(
        "transform",
        "transform",
        Choice({"esp": "Encapsulating Security Payload"}),
        PROPOSAL,
        _proposal,
        _fresh_proposal,
    ),
    *list_setting(
        "esp encryption-algorithm", "esp_encryption", algorithms.ENCRYPTION, PROPOSAL, _proposal, _fresh_proposal
    ),
    *list_setting(
        "esp authentication-algorithm",
        "esp_authentication",
        algorithms.AUTHENTICATION,
        PROPOSAL,
        _proposal,
        _fresh_proposal,
    ),
    *value_setting(
        "encapsulation-mode",
        "encapsulation_mode",
        Choice({"transport": "Transport mode", "tunnel": "Tunnel mode"}),
        PROPOSAL,
        _proposal,
        _fresh_proposal,
        lambda v: EncapsulationMode(v),
    ),
]


# --- ipsec policy / policy-template ------------------------------------------------------------
def _enter_policy(ctx: CommandContext) -> None:
    name, seq = ctx.string("name"), ctx.number("seq")
    template = ctx.opt_string("template")
    policies = ctx.config.ipsec_policies
    policy = policies.get((name, seq))
    if policy is None:
        if not ctx.keyword("isakmp"):
            raise CommandError(f"Error: The IPSec policy {name} {seq} does not exist; add isakmp to create it.")
        if template is not None:
            require(ctx, any(n == template for n, _ in ctx.config.ipsec_templates), f"IPSec policy template {template}")
            if any(p.template is not None for p in ctx.config.policy_group(name)):
                raise CommandError("Error: An IPSec policy group can contain only one template-based policy.")
        policy = policies[(name, seq)] = IpsecPolicy(name, seq, template=template)
    elif policy.template != template and (template is not None or ctx.keyword("isakmp")):
        raise CommandError(f"Error: The IPSec policy {name} {seq} already exists in another mode.")
    if policy.template is None:
        ctx.session.enter_view(ViewFrame(ViewKind.IPSEC_POLICY, f"ipsec-policy-isakmp-{name}-{seq}", policy))


def _delete_policy(ctx: CommandContext) -> None:
    name, seq = ctx.string("name"), ctx.opt_number("seq")
    keys = [k for k in ctx.config.ipsec_policies if k[0] == name and seq in (None, k[1])]
    require(ctx, bool(keys), f"IPSec policy {name}" + ("" if seq is None else f" {seq}"))
    if len(keys) == len(ctx.config.policy_group(name)):
        refuse_if_bound(ctx, group=name)
    for key in keys:
        del ctx.config.ipsec_policies[key]


def _enter_template(ctx: CommandContext) -> None:
    name, seq = ctx.string("name"), ctx.number("seq")
    template = ctx.config.ipsec_templates.setdefault((name, seq), IpsecPolicyTemplate(name, seq))
    ctx.session.enter_view(ViewFrame(ViewKind.IPSEC_TEMPLATE, f"ipsec-policy-templet-{name}-{seq}", template))


def _delete_template(ctx: CommandContext) -> None:
    name, seq = ctx.string("name"), ctx.opt_number("seq")
    keys = [k for k in ctx.config.ipsec_templates if k[0] == name and seq in (None, k[1])]
    require(ctx, bool(keys), f"IPSec policy template {name}" + ("" if seq is None else f" {seq}"))
    for key in keys:
        del ctx.config.ipsec_templates[key]


def _settings(ctx: CommandContext) -> IpsecPolicySettings:
    return ctx.target_as(IpsecPolicySettings)


def _fresh_settings() -> IpsecPolicySettings:
    return IpsecPolicySettings("", 0)


def _security_acl(ctx: CommandContext) -> None:
    number = ctx.number("number")
    if ctx.keyword("ipv6"):
        require(ctx, number in ctx.config.acls6, f"IPv6 ACL {number}")
        _settings(ctx).acl6 = number
        return
    require(ctx, number in ctx.config.acls, f"ACL {number}")
    _settings(ctx).acl = number


def _ike_peer(ctx: CommandContext) -> None:
    name = ctx.string("name")
    require(ctx, name in ctx.config.ike_peers, f"IKE peer {name}")
    _settings(ctx).ike_peer = name


def _proposals(ctx: CommandContext) -> None:
    names = ctx.words("name")
    if len(names) > MAX_PROPOSALS:
        raise ParamError("name", MAX_PROPOSALS, ErrorKind.TOO_MANY)
    for name in names:
        require(ctx, name in ctx.config.ipsec_proposals, f"IPSec proposal {name}")
    _settings(ctx).proposals = names


def _sa_duration(ctx: CommandContext) -> None:
    settings = _settings(ctx)
    seconds = ctx.opt_number("seconds")
    if seconds is not None:
        settings.sa_duration_time = seconds
    else:
        settings.sa_duration_traffic = ctx.number("kilobytes")


def _undo_sa_duration(ctx: CommandContext) -> None:
    settings, fresh = _settings(ctx), _fresh_settings()
    if ctx.keyword("time-based"):
        settings.sa_duration_time = fresh.sa_duration_time
    else:
        settings.sa_duration_traffic = fresh.sa_duration_traffic


def _policy(ctx: CommandContext) -> object:
    return ctx.target_as(IpsecPolicy)


def _fresh_policy() -> IpsecPolicy:
    return IpsecPolicy("", 0)


def _clear(attr: str) -> Command:
    def handler(ctx: CommandContext) -> None:
        setattr(_settings(ctx), attr, getattr(_fresh_settings(), attr))

    keyword = {"acl": "security acl", "acl6": "security acl ipv6", "ike_peer": "ike-peer",
               "proposals": "proposal"}[attr]
    return Command(f"undo {keyword}", handler, POLICY_OR_TEMPLATE)


POLICY_COMMANDS = [
    Command("ipsec policy <name> <seq> [ isakmp [ template <template> ] ]", _enter_policy, SYSTEM, params=_POLICY),
    Command("undo ipsec policy <name> [ <seq> ]", _delete_policy, SYSTEM, params=_POLICY),
    Command("ipsec policy-template <name> <seq>", _enter_template, SYSTEM, params=_TEMPLATE),
    Command("undo ipsec policy-template <name> [ <seq> ]", _delete_template, SYSTEM, params=_TEMPLATE),
    Command(
        "security acl <number>",
        _security_acl,
        POLICY_OR_TEMPLATE,
        params={"number": Integer("Advanced ACL number", 3000, 3999)},
    ),
    _clear("acl"),
    Command(
        "security acl ipv6 <number>",
        _security_acl,
        POLICY_OR_TEMPLATE,
        params={"number": Integer("Advanced IPv6 ACL number", 3000, 3999)},
    ),
    _clear("acl6"),
    Command("ike-peer <name>", _ike_peer, POLICY_OR_TEMPLATE, params={"name": String("IKE peer name", 1, 15)}),
    _clear("ike_peer"),
    Command(
        "proposal <name>+",
        _proposals,
        POLICY_OR_TEMPLATE,
        params={"name": String("IPSec proposal name (up to 12, first preferred)", 1, 15)},
    ),
    _clear("proposals"),
    *value_setting(
        "sa trigger-mode",
        "trigger_mode",
        Choice(
            {
                "auto": "Set up the tunnel as soon as the policy is applied",
                "traffic-based": "Set up the tunnel when traffic matches the ACL",
            }
        ),
        POLICY,
        _policy,
        _fresh_policy,
        lambda v: TriggerMode(v),
    ),
    Command(
        "sa duration { time-based <seconds> | traffic-based <kilobytes> }",
        _sa_duration,
        POLICY_OR_TEMPLATE,
        params={
            "seconds": Integer("IPSec SA lifetime in seconds", 120, 604800),
            "kilobytes": Integer("IPSec SA lifetime in kilobytes", 256, 4194303),
        },
    ),
    Command("undo sa duration { time-based | traffic-based }", _undo_sa_duration, POLICY_OR_TEMPLATE),
    *value_setting("pfs", "pfs", algorithms.PFS, POLICY_OR_TEMPLATE, _settings, _fresh_settings),
]

COMMANDS = PROPOSAL_COMMANDS + POLICY_COMMANDS
