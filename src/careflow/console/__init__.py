"""The web console at ``/console``: server-rendered pages (Jinja2, htmx, one stylesheet, all
shipped in the package) over the same services the API calls, for the people who run
careflow. ``web.py`` holds what every page shares; ``pages/`` one module per area."""
