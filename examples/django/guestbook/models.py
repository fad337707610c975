"""The guestbook's tables. The Flask API (examples/flask/api.py) reads and writes
guestbook_entry too, so its defaults live in the database, not only in Python."""
from django.db import models
from django.db.models.functions import Now


class Entry(models.Model):
    name = models.CharField(max_length=80)
    message = models.CharField(max_length=500)
    created = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "entries"

    def __str__(self):
        return f"{self.name}: {self.message[:40]}"


class Upload(models.Model):
    """An uploaded file, kept in Postgres so that every replica can serve it."""

    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    content = models.BinaryField()
    created = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.name} ({self.size} bytes)"
