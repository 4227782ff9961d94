"""Federation on the server: the bundle endpoint other trust domains fetch this server's bundle
from."""
