"""Development-only tools: the `make run` launcher, the DCV stand-in and the local set-up commands.

Nothing in production imports this package (tests/devtools/test_isolation.py checks it), and
"devtools" is in INSTALLED_APPS only in development (see ``ELEPHANT_DEV_TOOLS`` in
elephant/settings.py). The tools themselves may import anything in the project.
"""
