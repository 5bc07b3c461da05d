"""The gateway's own HTML pages: Jinja2 templates, their stylesheet, and their translations
(gettext catalogues read with Babel). Pages are rendered by routers (app.routers.track)."""
