"""The guestbook's URLs."""
from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("upload/", views.upload, name="upload"),
    path("uploads/<int:upload_id>/", views.download, name="download"),
    path("stream/", views.stream, name="stream"),
]
