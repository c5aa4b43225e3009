"""Checks that refuse configuration changes VRP refuses, each written once.

* The bound-policy rule (USG: once a policy group is applied to an interface, the ACLs and IKE peers it
  references cannot be modified): :func:`refuse_if_bound`.
* References must name existing objects (``ike-peer X`` needs ``ike peer X``): :func:`require`.

Both are skipped while a configuration file is loaded (``ctx.loading``): a file is applied as a whole,
in whatever order it lists its sections, and the result is judged as a whole by the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.policy.model import Config, IpsecPolicySettings


def _bound_settings(config: Config) -> Iterator[tuple[str, str, IpsecPolicySettings]]:
    """(interface, policy group, settings) for every policy and template reachable from a binding."""
    for itf in config.interfaces.values():
        group = itf.ipsec_policy
        if group is None:
            continue
        for policy in config.policy_group(group):
            yield itf.name, group, policy
            if policy.template is not None:
                for template in config.template_group(policy.template):
                    yield itf.name, group, template


def refuse_if_bound(
    ctx: CommandContext, *, acl: int | None = None, peer: str | None = None, group: str | None = None,
    acl6: int | None = None,
) -> None:
    """Raise if ``acl`` or ``peer`` is referenced by a policy group applied to an interface, or if the
    policy ``group`` itself is applied."""
    if ctx.loading:
        return
    for interface, bound_group, settings in _bound_settings(ctx.config):
        if acl is not None and settings.acl == acl:
            what = f"ACL {acl} is referenced by IPSec policy {bound_group}"
        elif acl6 is not None and settings.acl6 == acl6:
            what = f"IPv6 ACL {acl6} is referenced by IPSec policy {bound_group}"
        elif peer is not None and settings.ike_peer == peer:
            what = f"IKE peer {peer} is referenced by IPSec policy {bound_group}"
        elif group is not None and bound_group == group:
            what = f"IPSec policy {group} is"
        else:
            continue
        raise CommandError(
            f"Error: The {what} applied to interface {interface} and cannot be modified."
            " Run undo ipsec policy on the interface first."
        )


def require(ctx: CommandContext, exists: bool, what: str) -> None:
    """Raise ``Error: The <what> does not exist.`` unless ``exists`` (or a file is being loaded)."""
    if not exists and not ctx.loading:
        raise CommandError(f"Error: The {what} does not exist.")
