"""`manage.py ensure_superuser`: on first start, the admin's superuser from
DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and DJANGO_SUPERUSER_EMAIL (the variables
`createsuperuser --noinput` reads). An existing user is left as it is, so a password changed in
the admin survives restarts."""
import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the superuser named by DJANGO_SUPERUSER_USERNAME unless it exists."

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        if not username:
            self.stdout.write("DJANGO_SUPERUSER_USERNAME is not set: no superuser made")
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not password:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is set but DJANGO_SUPERUSER_PASSWORD is not")
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"superuser {username} exists")
            return
        users.objects.create_superuser(
            username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
        )
        self.stdout.write(f"superuser {username} created")
