"""The server: one trust domain's signing authority and its APIs."""
