"""What both IKE engines share: config types, selectors, the Child SA, retransmission, lifetimes, SPIs.

``ike/v2`` and ``ike/v1`` hold only their exchanges and tables; everything outside ``ike/`` that needs
IKE types (dataplane, policy, io) imports them from here, never from a version package.
"""
