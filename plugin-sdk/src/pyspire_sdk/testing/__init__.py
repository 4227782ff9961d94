"""Contract test kit for plugin authors.

Each plugin type has a suite: a test class whose tests every plugin of that type must pass.
Subclass it in your plugin's tests and provide the fixtures it asks for::

    import pytest_asyncio

    from pyspire_sdk.testing.key_manager_contract import KeyManagerContract

    class TestMyKeyManager(KeyManagerContract):
        @pytest_asyncio.fixture
        async def key_manager(self, host_services):
            manager = MyKeyManager()
            await manager.configure(MyConfig(), host_services)
            yield manager
            await manager.close()

The fixtures ``fake_clock`` and ``host_services`` come from the SDK's pytest plugin, which pytest
loads automatically once ``pyspire-plugin-sdk`` is installed. :mod:`pyspire_sdk.testing.pki`
makes real CAs, X509-SVIDs and bundles for tests that need certificates;
:func:`install_distribution` installs a plugin distribution into a directory (the
``plugin_site`` fixture's), so a test finds it through its entry points as pyspire does.

The suites run under pytest-asyncio in either mode: their tests carry ``pytest.mark.asyncio``
themselves, so a plugin's project needs no ``asyncio_mode = "auto"``. Async fixtures a plugin
writes are declared with ``pytest_asyncio.fixture``, which works in both modes (a plain
``pytest.fixture`` on an ``async def`` works only in auto mode).
"""

from pyspire_sdk.testing.distributions import install_distribution
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.host import RecordingMetrics, make_host_services
from pyspire_sdk.testing.pki import TestAuthority, jwt_authority, spki_der

__all__ = [
    "FakeClock",
    "RecordingMetrics",
    "TestAuthority",
    "install_distribution",
    "jwt_authority",
    "make_host_services",
    "spki_der",
]
