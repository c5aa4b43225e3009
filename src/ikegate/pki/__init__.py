"""The device's PKI: trusted CA certificates, its own certificates and private keys, CRLs
(:mod:`~ikegate.pki.store`); checking a peer's certificate chain and identity (:mod:`~ikegate.pki.verify`);
and the signature schemes IKE authenticates with (:mod:`~ikegate.pki.signature`).

Nothing here does I/O except :class:`~ikegate.pki.store.PkiStore` reading the files an operator imports;
verification and signatures are pure functions of bytes, keys and ``now``, so the sans-I/O engines can
call them.
"""
