"""Flask fixture app for the sluice integration tests."""

import hashlib

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)


@app.get("/json")
def json_view():
    return jsonify({"hello": "flask"})


@app.post("/form")
def form_view():
    return jsonify({"name": request.form.get("name"), "value": request.form.get("value")})


@app.post("/upload")
def upload_view():
    f = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while chunk := f.stream.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return jsonify({"filename": f.filename, "size": size, "sha256": digest.hexdigest()})


@app.get("/redirect")
def redirect_view():
    return redirect("/json", code=302)


@app.get("/cookie/set")
def cookie_set():
    resp = jsonify({"set": "flavour"})
    resp.set_cookie("flavour", "oat")
    return resp


@app.get("/cookie/get")
def cookie_get():
    return jsonify({"flavour": request.cookies.get("flavour")})


@app.get("/stream")
def stream_view():
    def gen():
        for i in range(5):
            yield f"line {i}\n"

    return Response(gen(), mimetype="text/plain")
