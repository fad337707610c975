"""The Django scenario of the benchmark: one JSON view, no database, settings in this module."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="sluice-bench-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    DATABASES={},
    INSTALLED_APPS=[],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
    USE_TZ=True,
)
django.setup()

from django.http import JsonResponse  # noqa: E402 (needs configured settings)
from django.urls import path  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402


def index(request):
    return JsonResponse({"message": "Hello, World!", "server": "bench", "items": [1, 2, 3]})


urlpatterns = [path("", index)]

application = get_wsgi_application()
