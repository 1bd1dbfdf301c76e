"""osctl: manage what a host boots, as OS versions shipped in OCI images.

Kept import-free on purpose: `osctl --help` must not pay for docker or pydantic.
"""

__version__ = "0.1.0"
