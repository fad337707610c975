from django.contrib import admin
from django.urls import path

from sluicetest import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("form/", views.form),
    path("upload/", views.upload),
    path("stream/", views.stream),
    path("file/", views.file),
]
