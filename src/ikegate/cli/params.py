"""Typed command parameters: what a token may be, how `?` names it, and the value it becomes.

Two families exist because VRP treats them differently while matching:

* :class:`Choice` is a set of words (``aes-256``, ``permit``). Its words behave exactly like keywords:
  abbreviation, exact-wins, ambiguity and `?` listing apply, and the full word becomes the value.
* :class:`ValueParam` subclasses parse a free token (a number, an address, a name). A token that fails
  to parse is a *Wrong parameter* at that token, never an unrecognised command.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ikegate.policy import secret


class ParamValueError(ValueError):
    """A token is not a valid value of its parameter type (reported as *Wrong parameter*)."""


@dataclass(frozen=True)
class Choice:
    """An enumerated parameter: its words match like keywords and the full word is the value."""

    words: Mapping[str, str]  # word -> help text, in the order `?` lists them
    sensitive: bool = False


@dataclass(frozen=True)
class ValueParam:
    """Base of the free-token parameter types. ``display`` is the `?` column (``INTEGER<1-99>``)."""

    help: str
    sensitive: bool = field(default=False, kw_only=True)  # masked in the command log

    @property
    def display(self) -> str:
        raise NotImplementedError

    def parse(self, token: str) -> object:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(ValueParam):
    low: int = 0
    high: int = 4294967295

    @property
    def display(self) -> str:
        return f"INTEGER<{self.low}-{self.high}>"

    def parse(self, token: str) -> int:
        if not token.isdigit():
            raise ParamValueError(token)
        value = int(token)
        if not self.low <= value <= self.high:
            raise ParamValueError(token)
        return value


@dataclass(frozen=True)
class Ipv4(ValueParam):
    @property
    def display(self) -> str:
        return "X.X.X.X"

    def parse(self, token: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(token)
        except ValueError as exc:
            raise ParamValueError(token) from exc


@dataclass(frozen=True)
class Ipv6(ValueParam):
    @property
    def display(self) -> str:
        return "X:X::X:X"

    def parse(self, token: str) -> ipaddress.IPv6Address:
        if ":" not in token:
            raise ParamValueError(token)
        try:
            return ipaddress.IPv6Address(token)
        except ValueError as exc:
            raise ParamValueError(token) from exc


@dataclass(frozen=True)
class Ipv6Prefix(ValueParam):
    """``X:X::X:X/M``: an interface address with its prefix length."""

    @property
    def display(self) -> str:
        return "X:X::X:X/M"

    def parse(self, token: str) -> ipaddress.IPv6Interface:
        if "/" not in token or ":" not in token:
            raise ParamValueError(token)
        try:
            return ipaddress.IPv6Interface(token)
        except ValueError as exc:
            raise ParamValueError(token) from exc


def _contiguous(value: int, ones_high: bool) -> bool:
    """True for a run of ones at the top (a netmask) or at the bottom (a wildcard) of 32 bits."""
    if not ones_high:
        return (value & (value + 1)) == 0
    inverted = value ^ 0xFFFFFFFF
    return (inverted & (inverted + 1)) == 0


@dataclass(frozen=True)
class Netmask(ValueParam):
    """A dotted netmask; only contiguous masks are accepted (VRP refuses ``255.0.255.0``)."""

    @property
    def display(self) -> str:
        return "X.X.X.X"

    def parse(self, token: str) -> int:
        mask = Ipv4(self.help).parse(token)
        if not _contiguous(int(mask), ones_high=True):
            raise ParamValueError(token)
        return bin(int(mask)).count("1")


@dataclass(frozen=True)
class Wildcard(ValueParam):
    """An ACL wildcard (inverse mask); ``0`` is short for ``0.0.0.0`` (one host). The value is the
    address form. Non-contiguous wildcards are refused because the SPD works on prefixes."""

    @property
    def display(self) -> str:
        return "X.X.X.X"

    def parse(self, token: str) -> ipaddress.IPv4Address:
        if token == "0":
            return ipaddress.IPv4Address(0)
        value = Ipv4(self.help).parse(token)
        if not _contiguous(int(value), ones_high=False):
            raise ParamValueError(token)
        return value


_NAME_BAD = re.compile(r"[\s?]")


@dataclass(frozen=True)
class String(ValueParam):
    """A name or text of ``low..high`` characters without spaces or ``?`` (case-sensitive)."""

    low: int = 1
    high: int = 15

    @property
    def display(self) -> str:
        return f"STRING<{self.low}-{self.high}>"

    def parse(self, token: str) -> str:
        if not self.low <= len(token) <= self.high or _NAME_BAD.search(token):
            raise ParamValueError(token)
        return token


@dataclass(frozen=True)
class Secret(ValueParam):
    """A pre-shared key: clear text of ``1..high`` characters, or the ``%^%#...%^%#`` cipher form.

    The value is always the clear key (the cipher form is decrypted here), so the model never has to
    know which form the operator typed. It is sensitive: the command log masks it.
    """

    high: int = 127
    sensitive: bool = field(default=True, kw_only=True)

    @property
    def display(self) -> str:
        return f"STRING<1-{self.high}>/<{self.high + 1}-{secret.MAX_CIPHER_LENGTH}>"

    def parse(self, token: str) -> str:
        if _NAME_BAD.search(token):
            raise ParamValueError(token)
        if secret.is_cipher(token):
            try:
                return secret.decrypt_secret(token)
            except ValueError as exc:
                raise ParamValueError(token) from exc
        if not 1 <= len(token) <= self.high:
            raise ParamValueError(token)
        return token


_INTERFACE = re.compile(r"^([A-Za-z-]+)(\d+(?:/\d+)*)$")
_INTERFACE_TYPES: dict[str, int] = {"GigabitEthernet": 3, "LoopBack": 1, "Tunnel": 1}


def canonical_interface_name(token: str) -> str:
    """``GigabitEthernet0/0/1`` from any case or unambiguous prefix of the type (``ge``/``g0/0/1``).

    Raises :class:`ParamValueError` for unknown types or the wrong number of ``/`` parts.
    """
    found = _INTERFACE.match(token)
    if found is None:
        raise ParamValueError(token)
    kind, number = found.groups()
    aliases = {"ge": "GigabitEthernet"}
    full = aliases.get(kind.lower())
    if full is None:
        matches = [t for t in _INTERFACE_TYPES if t.lower().startswith(kind.lower())]
        if len(matches) != 1:
            raise ParamValueError(token)
        full = matches[0]
    if number.count("/") + 1 != _INTERFACE_TYPES[full]:
        raise ParamValueError(token)
    return full + number


@dataclass(frozen=True)
class InterfaceName(ValueParam):
    @property
    def display(self) -> str:
        return "STRING<1-63>"

    def parse(self, token: str) -> str:
        return canonical_interface_name(token)


Param = Choice | ValueParam
