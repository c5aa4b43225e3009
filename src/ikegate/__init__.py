"""ikegate: an IKE/IPsec VPN gateway managed through a Huawei USG (VRP) style command line."""

__version__ = "0.1.0"
