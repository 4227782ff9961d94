"""The certificate authority: X.509 CA and JWT keys, their rotation, and SVID minting.

Everything here is sans-IO apart from the key manager it signs through and the store it journals
to: no sockets, no wall clock (time comes from an injected clock), so rotation through many CA
generations is tested in milliseconds.
"""
