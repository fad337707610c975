"""The guestbook's tables in Django's admin."""
from django.contrib import admin

from .models import Entry, Upload


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "message", "created"]
    search_fields = ["name", "message"]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "content_type", "size", "sha256", "created"]
    exclude = ["content"]
