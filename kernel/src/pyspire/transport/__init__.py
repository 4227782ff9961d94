"""Sockets and TLS: SPIFFE mTLS contexts, unix socket set-up, who is calling, and request
messages read without trusting the peer (:mod:`pyspire.transport.messages`)."""
