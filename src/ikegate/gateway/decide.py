"""What happens after an SA is deleted: the seed's matrix, in one table.

``reset ike sa`` (and a peer's Delete, DPD, expiry) removes SAs; what comes back depends only on the kind
of policy the SA came from and on the phase that was deleted. Every deletion path asks :func:`after_delete`,
so the behaviour the documentation describes reads off :data:`REESTABLISH`.
"""

from __future__ import annotations

import enum

from ikegate.gateway.translate import PolicyKind


class Action(enum.Enum):
    WAIT = "wait for the peer"
    REINITIATE = "negotiate the IKE SA and then the IPsec SA at once"
    RENEGOTIATE_CHILD = "negotiate the IPsec SA again under the surviving IKE SA"
    ARM_TRAP = "wait for traffic matching the policy's ACL"


#: (policy kind, deleted phase) -> action (seed: "Usage Guidelines"). Deleting all SAs is phase 1.
REESTABLISH: dict[tuple[PolicyKind, int], Action] = {
    (PolicyKind.TEMPLATE, 1): Action.WAIT,
    (PolicyKind.TEMPLATE, 2): Action.WAIT,
    (PolicyKind.AUTO, 1): Action.REINITIATE,
    (PolicyKind.AUTO, 2): Action.RENEGOTIATE_CHILD,
    (PolicyKind.TRAFFIC_BASED, 1): Action.ARM_TRAP,
    (PolicyKind.TRAFFIC_BASED, 2): Action.ARM_TRAP,
}


def after_delete(kind: PolicyKind, phase: int) -> Action:
    return REESTABLISH[(kind, phase)]
