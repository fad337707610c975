"""The guestbook's pages: the form, an upload, and a streamed response."""
import hashlib
import time

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import EntryForm, UploadForm
from .models import Entry, Upload


def index(request):
    """The entries and a form that adds one (POST, CSRF-protected)."""
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            entry = form.save()
            return redirect(f"/?added={entry.pk}")
    else:
        form = EntryForm()
    context = {
        "form": form,
        "upload_form": UploadForm(),
        "entries": Entry.objects.all()[:20],
        "uploads": Upload.objects.defer("content")[:5],
    }
    return render(request, "guestbook/index.html", context)


def upload(request):
    """A multipart upload, stored in Postgres; answers with a redirect to its bytes."""
    if request.method != "POST":
        return redirect("index")
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return HttpResponse("no file\n", status=400, content_type="text/plain")
    f = form.cleaned_data["file"]
    data = f.read()
    stored = Upload.objects.create(
        name=f.name,
        content_type=f.content_type or "application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content=data,
    )
    return redirect("download", upload_id=stored.pk)


def download(request, upload_id):
    stored = get_object_or_404(Upload, pk=upload_id)
    response = HttpResponse(bytes(stored.content), content_type=stored.content_type)
    response["Content-Disposition"] = f'attachment; filename="{stored.name}"'
    response["X-Content-SHA256"] = stored.sha256
    return response


def stream(request):
    """`?lines=N&delay=S`: N lines, S seconds apart, each sent as it is made (a
    StreamingHttpResponse; sluice passes each chunk on as the app yields it)."""
    lines = min(int(request.GET.get("lines", 10)), 1000)
    delay = min(float(request.GET.get("delay", 0.1)), 5.0)

    def produce():
        for i in range(lines):
            if i:
                time.sleep(delay)
            yield f"line {i + 1} of {lines}\n"

    return StreamingHttpResponse(produce(), content_type="text/plain; charset=utf-8")
