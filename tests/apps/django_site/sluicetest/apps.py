from django.apps import AppConfig


class FixturesConfig(AppConfig):
    name = "sluicetest"
