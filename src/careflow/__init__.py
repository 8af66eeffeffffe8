"""careflow: event-driven automations and pathway routing for healthcare practice platforms."""

from importlib.metadata import version

# The installed distribution's version (pyproject.toml): `careflow --version`, the API's.
__version__ = version("careflow")
