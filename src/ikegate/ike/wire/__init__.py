"""Wire codecs for IKEv2 messages and the IANA registries they use."""
