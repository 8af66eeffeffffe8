"""Email and SMS templates: the built-ins careflow ships (``builtin``), organisations' own
overrides (``/v1/templates``), and sandboxed rendering (``rendering``)."""
