"""The example site's URLs: the guestbook at /, the admin at /admin/."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("guestbook.urls")),
]
