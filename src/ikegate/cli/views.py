"""Command views: which commands a prompt accepts, and how its prompt reads.

A view is a kind (``ike-peer``) plus the object it edits (peer ``FW2``). The shell keeps a stack of
:class:`ViewFrame`; ``quit`` pops one, ``return``/Ctrl+Z pops to the user view. Sub-views of the system
view fall back to the system view's commands (VRP lets ``ike peer B`` be typed straight inside
``[sys-ike-peer-A]``), which is also what lets a configuration file omit ``quit`` between sections.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ViewKind(enum.Enum):
    USER = "user"
    SYSTEM = "system"
    INTERFACE = "interface"
    IKE_PROPOSAL = "ike-proposal"
    IKE_PEER = "ike-peer"
    IPSEC_PROPOSAL = "ipsec-proposal"
    IPSEC_POLICY = "ipsec-policy"
    IPSEC_TEMPLATE = "ipsec-template"
    ACL = "acl"
    ACL6 = "acl6"
    AAA = "aaa"
    RSA_PUBLIC_KEY = "rsa-public-key"
    ECC_PUBLIC_KEY = "ecc-public-key"
    USER_INTERFACE = "user-interface"


ALL_VIEWS: frozenset[ViewKind] = frozenset(ViewKind)
CONFIG_VIEWS: frozenset[ViewKind] = ALL_VIEWS - {ViewKind.USER}
SUB_VIEWS: frozenset[ViewKind] = CONFIG_VIEWS - {ViewKind.SYSTEM}


@dataclass(frozen=True)
class ViewFrame:
    """One entry of the view stack. ``label`` is the part of the prompt after ``sysname-``
    (``ike-peer-FW2``); ``target`` is the model object the view edits."""

    kind: ViewKind
    label: str = ""
    target: object | None = None

    def prompt(self, sysname: str) -> str:
        if self.kind is ViewKind.USER:
            return f"<{sysname}>"
        if self.kind is ViewKind.SYSTEM:
            return f"[{sysname}]"
        return f"[{sysname}-{self.label}]"


USER_FRAME = ViewFrame(ViewKind.USER)
SYSTEM_FRAME = ViewFrame(ViewKind.SYSTEM)
