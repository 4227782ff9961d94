"""Plugins that exist only for tests: a notifier, a bundle publisher and a credential composer
that say what happened to them in files, so a test can watch a real server process use them.

They are installed for a test as the distribution ``pyspire-testplugins`` (see
:func:`processes.install_test_plugins`), so the server finds them through their entry points
like any installed plugin.
"""
