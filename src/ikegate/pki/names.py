"""Distinguished names as text, and the operator's DN strings matched against certificates.

One rendering everywhere (displays, log reasons): the natural order, root-most attribute first, joined
by ``", "`` — ``C=CN, O=Example, CN=gw1`` — as strongSwan and OpenSSL's ``-nameopt oneline`` print them.
An operator may type a DN in either order, with or without spaces after the commas
(``remote-id CN=gw1,O=Example``); :func:`dn_matches` compares attribute by attribute, case-insensitively.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

_SHORT: dict[x509.ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.TITLE: "title",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.INITIALS: "initials",
    NameOID.USER_ID: "UID",
}
#: Other spellings an operator may type for the same attribute.
_ALIASES = {"emailaddress": "e", "email": "e", "s": "st", "serialnumber": "serialnumber", "uid": "uid"}


def _attr_name(oid: x509.ObjectIdentifier) -> str:
    return _SHORT.get(oid, oid.dotted_string)


def _value(attr: x509.NameAttribute[str | bytes]) -> str:
    value = attr.value
    return value if isinstance(value, str) else value.hex()


def name_pairs(name: x509.Name) -> list[tuple[str, str]]:
    """(attribute, value) pairs in the certificate's own (root-most first) order."""
    return [(_attr_name(a.oid), _value(a)) for rdn in name.rdns for a in rdn]


def dn_text(name: x509.Name) -> str:
    """``C=CN, O=Example, CN=gw1``; an empty name is ``(empty)``."""
    pairs = name_pairs(name)
    return ", ".join(f"{k}={v}" for k, v in pairs) if pairs else "(empty)"


_SPLIT = re.compile(r"(?<!\\)[,/;]")


def parse_dn(text: str) -> list[tuple[str, str]]:
    """``CN=gw1,O=Example`` (or ``/``/``;`` separated) as (attribute, value) pairs, in the order typed.

    Raises ValueError for a part without ``=``.
    """
    pairs: list[tuple[str, str]] = []
    for part in _SPLIT.split(text):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{part!r} is not ATTRIBUTE=value")
        pairs.append((key.strip(), value.strip().replace("\\,", ",")))
    if not pairs:
        raise ValueError("empty distinguished name")
    return pairs


_OID_OF = {short.lower(): oid for oid, short in _SHORT.items()}


def encode_dn(text: str) -> bytes:
    """The DER Name of a DN string (``CN=gw1,O=Example``, root-most attribute first as typed); UTF8String
    values except C (PrintableString), as ``cryptography`` encodes them. ValueError for an unknown
    attribute."""
    attrs = []
    for key, value in parse_dn(text):
        oid = _OID_OF.get(_ALIASES.get(key.lower(), key.lower()))
        if oid is None:
            raise ValueError(f"unknown DN attribute {key}")
        attrs.append(x509.NameAttribute(oid, value))
    return x509.Name(attrs).public_bytes()


def _norm(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for key, value in pairs:
        k = key.lower()
        out.append((_ALIASES.get(k, k), " ".join(value.split()).lower()))
    return out


def dn_matches(text: str, name: x509.Name) -> bool:
    """Whether the operator's DN string names ``name`` (typed in either order)."""
    try:
        wanted = _norm(parse_dn(text))
    except ValueError:
        return False
    have = _norm(name_pairs(name))
    return wanted == have or wanted == have[::-1]
