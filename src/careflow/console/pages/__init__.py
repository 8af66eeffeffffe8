"""The console's pages, one module per area; each declares a ``router`` (no prefix: the
console's router adds ``/console``)."""
