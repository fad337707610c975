"""The Flask scenario of the benchmark: one JSON view."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify({"message": "Hello, World!", "server": "bench", "items": [1, 2, 3]})
