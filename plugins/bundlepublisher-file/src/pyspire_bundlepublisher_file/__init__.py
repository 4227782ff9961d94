"""The ``file`` bundle publisher: the trust bundle written to a local file, replaced in one step
on every change, so local consumers follow rotation by reading it."""

from pyspire_bundlepublisher_file.publisher import PLUGIN_NAME, FileConfig, FilePublisher

__all__ = ["PLUGIN_NAME", "FileConfig", "FilePublisher"]
