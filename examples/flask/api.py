"""The example's JSON API (Flask), `api:app`: reads and writes the guestbook the Django site
keeps in Postgres (its table guestbook_entry, made by the site's migrations)."""
import psycopg
from flask import Flask, abort, jsonify, request, url_for
from psycopg.rows import dict_row

app = Flask(__name__)

NAME_MAX = 80  # as guestbook.models.Entry
MESSAGE_MAX = 500


def connect():
    # libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE, as Django's settings do.
    return psycopg.connect(row_factory=dict_row, connect_timeout=5)


def as_json(row):
    return {**row, "created": row["created"].isoformat()}


@app.get("/")
def index():
    """The API's index: what each endpoint does."""
    return jsonify(
        name="guestbook API",
        served_by="sluice",
        endpoints={
            "GET /api/entries?limit=N": "the newest entries (N up to 500, default 50)",
            "GET /api/entries/<id>": "one entry",
            "POST /api/entries": 'add an entry: {"name": "...", "message": "..."}',
        },
        links={"entries": url_for("list_entries")},
    )


@app.get("/api/entries")
def list_entries():
    limit = max(1, min(request.args.get("limit", 50, type=int), 500))
    with connect() as conn:
        rows = conn.execute(
            "SELECT id, name, message, created FROM guestbook_entry"
            " ORDER BY created DESC, id DESC LIMIT %s",
            (limit,),
        ).fetchall()
    return jsonify(entries=[as_json(r) for r in rows])


@app.get("/api/entries/<int:entry_id>")
def get_entry(entry_id):
    with connect() as conn:
        row = conn.execute(
            "SELECT id, name, message, created FROM guestbook_entry WHERE id = %s", (entry_id,)
        ).fetchone()
    if row is None:
        abort(404)
    return jsonify(as_json(row))


@app.post("/api/entries")
def create_entry():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="a JSON object is expected"), 400
    name, message = data.get("name"), data.get("message")
    if not isinstance(name, str) or not 0 < len(name) <= NAME_MAX:
        return jsonify(error=f"name: a string of 1 to {NAME_MAX} characters"), 400
    if not isinstance(message, str) or not 0 < len(message) <= MESSAGE_MAX:
        return jsonify(error=f"message: a string of 1 to {MESSAGE_MAX} characters"), 400
    with connect() as conn:
        row = conn.execute(
            "INSERT INTO guestbook_entry (name, message) VALUES (%s, %s)"
            " RETURNING id, name, message, created",
            (name, message),
        ).fetchone()
    response = jsonify(as_json(row))
    response.status_code = 201
    response.headers["Location"] = url_for("get_entry", entry_id=row["id"])
    return response


@app.errorhandler(404)
def not_found(_error):
    return jsonify(error="not found"), 404
