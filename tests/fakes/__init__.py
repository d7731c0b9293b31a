"""In-process fakes of backend clients, for tests that must not need a server."""
