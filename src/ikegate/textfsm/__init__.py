"""TextFSM templates for ikegate's displays, with an index in the ntc-templates layout.

ntc-templates has no template for ``display ike sa`` or ``display ipsec sa`` on ``huawei_vrp``, so
automation that drives ikegate (netmiko's ``use_textfsm``, ``textfsm.clitable``) would get raw text.
These files fill that gap; they are data, not code, and are written against ikegate's own renderers
(the golden outputs in ``tests/golden`` are their test corpus)::

    from textfsm import clitable
    from ikegate.textfsm import template_dir

    table = clitable.CliTable("index", template_dir())
    table.ParseCmd(output, {"Command": "display ike sa", "Platform": "huawei_vrp"})

The templates follow ntc-templates' conventions (upper-case value names, ``^. -> Error`` so a line
the template does not know fails loudly instead of being skipped), so the directory can also be
given to netmiko as ``NET_TEXTFSM`` / ``textfsm_template``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INDEX", "PLATFORM", "template_dir"]

#: The index file's name and the platform its rows are keyed on.
INDEX = "index"
PLATFORM = "huawei_vrp"


def template_dir() -> str:
    """The directory holding the templates and the ``index`` file.

    A plain string path, not an ``importlib.resources`` traversable, because ``CliTable`` joins it
    with ``os.path.join`` and opens the files itself; the templates are installed as files beside this
    module (setuptools ``package-data``), never inside a zip.
    """
    return str(Path(__file__).resolve().parent)
