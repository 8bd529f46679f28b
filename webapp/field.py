"""Field work from a phone: my cases, report on the spot, act on a case, patrol."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from webapp.auth import web_user

bp = Blueprint("field", __name__, url_prefix="/m")


def hemei():
    return current_app.extensions["hemei"]


@bp.get("/")
def home():
    """The signed-in person's work list."""
    user = web_user()
    return render_template("field/home.html", user=user)
