"""The guestbook's forms (Django checks the CSRF token of each POST)."""
from django import forms

from .models import Entry


class EntryForm(forms.ModelForm):
    class Meta:
        model = Entry
        fields = ["name", "message"]


class UploadForm(forms.Form):
    file = forms.FileField()
