"""IKEv1 (RFC 2409 over ISAKMP RFC 2408, IPsec DOI RFC 2407): codec, key derivation and the sans-I/O engine.

:class:`IsakmpSa` mirrors the IKEv2 ``IkeSa`` surface and emits the same events, so the gateway drives
both versions alike; :class:`V1Options` carries what only IKEv1 has (exchange mode, phase1-phase2
dependency, DPD).
"""

from ikegate.ike.v1.sa import DpdType, ExchangeMode, IsakmpSa, V1Options

__all__ = ["DpdType", "ExchangeMode", "IsakmpSa", "V1Options"]
