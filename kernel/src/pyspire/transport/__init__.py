"""Sockets and TLS: SPIFFE mTLS contexts, unix socket set-up, and who is on the other end."""
