"""Install, start, check and stop the real services the tests run against, without Docker.

Stdlib only, so it runs before any virtualenv exists. Configuration comes from the environment
that ``stack/ports.env`` sets up; state (installs, data, logs, pid files) lives in the cache
directory so a fresh clone on the same machine reuses it.
"""
