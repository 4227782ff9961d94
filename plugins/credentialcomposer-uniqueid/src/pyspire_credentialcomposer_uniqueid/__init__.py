"""The ``uniqueid`` credential composer: a unique subject per workload X509-SVID."""

from pyspire_credentialcomposer_uniqueid.plugin import UniqueIdComposer, unique_id

__all__ = ["UniqueIdComposer", "unique_id"]
