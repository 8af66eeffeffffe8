"""Interactive API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

Both load their scripts and styles from files shipped inside this package (``static/``:
``swagger-ui-dist`` and ``redoc`` from npm, with their licences), never from a CDN, so the
docs work on a clinic network that reaches nothing outside. ``static/VERSIONS`` names the
versions shipped.
"""
