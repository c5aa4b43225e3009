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
given to netmiko as ``NET_TEXTFSM`` / ``textfsm_template``. Every row matches the platforms
``huawei`` and ``huawei_vrp`` (netmiko's two device types for VRP).

An empty table (``display ike sa`` with no SA) parses to no rows; netmiko then returns the raw text
rather than ``[]``, so a script must accept both.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["INDEX", "PLATFORM", "PLATFORMS", "template_dir"]

#: The index file's name and the platform its rows are keyed on.
INDEX = "index"
PLATFORM = "huawei_vrp"
#: Every platform name the index rows match: netmiko passes its device type as the platform, and both
#: ``huawei`` and ``huawei_vrp`` select its VRP driver.
PLATFORMS = ("huawei", "huawei_vrp")


def template_dir() -> str:
    """The directory holding the templates and the ``index`` file.

    A plain string path, not an ``importlib.resources`` traversable, because ``CliTable`` joins it
    with ``os.path.join`` and opens the files itself; the templates are installed as files beside this
    module (setuptools ``package-data``), never inside a zip.
    """
    return str(Path(__file__).resolve().parent)
