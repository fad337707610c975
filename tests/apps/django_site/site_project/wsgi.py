"""WSGI entry point: site_project.wsgi:application (run with chdir = tests/apps/django_site)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_project.settings")

application = get_wsgi_application()
