import hashlib
import os
import threading

from django.conf import settings
from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

FILE_SIZE = 200 * 1024


def file_content(size=FILE_SIZE):
    """Deterministic content served by /file/: byte i is (i * 31 + 7) % 251."""
    return bytes((i * 31 + 7) % 251 for i in range(size))


@require_http_methods(["GET", "POST"])
def form(request):
    if request.method == "POST":  # CSRF-protected by CsrfViewMiddleware
        return JsonResponse({"message": request.POST.get("message")})
    return render(request, "sluicetest/form.html")


@csrf_exempt
@require_POST
def upload(request):
    f = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in f.chunks():
        digest.update(chunk)
    return JsonResponse({"name": f.name, "size": f.size, "sha256": digest.hexdigest()})


@require_GET
def stream(request):
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(5)), content_type="text/plain")


@require_GET
def file(request):
    path = settings.SLUICE_FILE_PATH
    if not path.exists():
        # Unique temp name + rename: concurrent workers never see a partial file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(file_content())
        os.replace(tmp, path)
    return FileResponse(open(path, "rb"), content_type="application/octet-stream")
