"""The guestbook: entries written through a form (and the Flask API), and uploaded files."""
from django.apps import AppConfig


class GuestbookConfig(AppConfig):
    name = "guestbook"
    default_auto_field = "django.db.models.BigAutoField"
