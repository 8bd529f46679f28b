"""People, organisations, roles, grid assignments and API tokens.

Roles (DOMAIN.md): ``admin``; ``planner`` (reads everything in their area: a street or
community code); ``grid_worker`` (handles the cases located in their grids);
``field_staff`` (belongs to an organisation — a property company or a partner unit — and
handles the cases dispatched to or claimed by it). Residents have no account.

Passwords are hashed with scrypt (stdlib, salted, memory-hard); API tokens are random,
shown once, and stored only as a SHA-256 digest, so a stolen database yields neither.

Usernames are unique without regard to case (``Wang`` and ``wang`` cannot both be made;
:meth:`Accounts.username_clashes` finds pairs made before that rule). A user's web
sessions carry the user's *session generation*; logging out, a password reset and a
deactivation move it on, which ends every session issued before (signed-cookie sessions
cannot be revoked one by one). Errors for bad input carry ``details["reason"]`` so that
the web pages can word them in the reader's language.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace

import sqlalchemy as sa

from gis.cases import utcnow
from gis.errors import Conflict, InvalidInput, NotFound
from gis.storage import meta_table, metadata

ROLES = ("admin", "planner", "grid_worker", "field_staff")
ROLE_LABELS = {"admin": ("管理员", "Administrator"), "planner": ("规划/指挥人员", "Planner"),
               "grid_worker": ("网格员", "Grid worker"),
               "field_staff": ("处置人员", "Field staff")}
ORG_KINDS = ("property", "partner", "crew", "office")
ORG_KIND_LABELS = {"property": ("物业公司", "Property company"),
                   "partner": ("共建单位", "Partner unit"),
                   "crew": ("维修作业队", "Repair crew"),
                   "office": ("街道/社区机关", "Street or community office")}


def role_label(role: str, locale: str = "zh") -> str:
    """A role's name for people, in ``locale`` (zh or en); the key itself if unknown."""
    zh, en = ROLE_LABELS.get(role, (role, role))
    return en if locale.startswith("en") else zh


def org_kind_label(kind: str, locale: str = "zh") -> str:
    """An organisation type's name for people, in ``locale``; the key itself if unknown."""
    zh, en = ORG_KIND_LABELS.get(kind, (kind, kind))
    return en if locale.startswith("en") else zh


def _invalid(message: str, field: str, reason: str, **details) -> InvalidInput:
    """InvalidInput with a machine-readable reason (and its values) for the web pages."""
    return InvalidInput(message, field=field, details={"reason": reason, **details})

organisations = sa.Table(
    "organisations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("org_id", sa.Integer, sa.ForeignKey("organisations.id")),
    sa.Column("area_code", sa.String(32)),  # planners: a street or community code
    sa.Column("password_hash", sa.String(255)),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

user_grids = sa.Table(
    "user_grids", metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("grid_code", sa.String(32), primary_key=True),
)

api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False),
    sa.Column("label", sa.String(100), nullable=False, default=""),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
)

checkins = sa.Table(
    "checkins", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("grid_code", sa.String(32)),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("accuracy_m", sa.Float),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Index("ix_checkins_grid_at", "grid_code", "at"),
)

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """A salted scrypt hash in the form ``scrypt$n$r$p$salt$digest`` (base64)."""
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b = base64.b64encode
    return (f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
            f"{b(salt).decode()}${b(dk).decode()}")


def check_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the hash (constant-time comparison)."""
    try:
        algo, n, r, p, salt, digest = (stored or "").split("$")
        if algo != "scrypt":
            return False
        dk = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), dklen=32,
                            n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk, base64.b64decode(digest))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class User:
    """A person with an account, and what they may touch."""

    id: int
    username: str
    display_name: str
    role: str
    org_id: int | None = None
    org_name: str | None = None
    area_code: str | None = None
    active: bool = True
    grids: list[str] = field(default_factory=list)

    # Flask-Login's protocol, kept here so the web layer needs no wrapper class.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def role_label(self, locale: str = "zh") -> str:
        return role_label(self.role, locale)

    def to_dict(self) -> dict:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "role": self.role, "org_id": self.org_id, "org_name": self.org_name,
                "area_code": self.area_code, "grids": self.grids}


# The queries that load a user (with their organisation's name and their grids) in one
# statement, built once: they run on every request that carries a token or a session. A
# user comes back as one row per grid (one row with no grid for most roles): a second
# query for the grids cost as much as the first (bench/intake.py).
_USER_SELECT = (sa.select(users, organisations.c.name.label("org_name"),
                          user_grids.c.grid_code)
                .select_from(users.outerjoin(organisations,
                                             users.c.org_id == organisations.c.id)
                             .outerjoin(user_grids, user_grids.c.user_id == users.c.id)))
_USER_BY_ID = _USER_SELECT.where(users.c.id == sa.bindparam("uid"))
_USER_BY_TOKEN = _USER_SELECT.where(users.c.id == sa.select(api_tokens.c.user_id).where(
    api_tokens.c.digest == sa.bindparam("digest"),
    api_tokens.c.revoked_at.is_(None)).scalar_subquery())


def _user_from_rows(rows: list) -> User | None:
    """The user in ``rows`` (mappings of :data:`_USER_SELECT`, one per grid), or None."""
    if not rows:
        return None
    row = rows[0]
    grids = sorted(r["grid_code"] for r in rows if r["grid_code"] is not None)
    return User(id=row["id"], username=row["username"], display_name=row["display_name"],
                role=row["role"], org_id=row["org_id"], org_name=row["org_name"],
                area_code=row["area_code"], active=row["active"], grids=grids)


def _load_user(conn, query, params: dict) -> User | None:
    """The user ``query`` finds (None if none), with their grids, on ``conn``."""
    return _user_from_rows(conn.execute(query, params).mappings().all())


def _check_password(password: str | None) -> None:
    """Refuse a password shorter than 8 characters (None: no password, a token-only
    account)."""
    if password is not None and len(password) < 8:
        raise _invalid("password must be at least 8 characters", "password",
                       "password_length")


def _check_assignment(role: str, grids: list[str], org_id: int | None,
                      area_code: str | None, known_grids: set[str] | None,
                      known_areas: set[str] | None) -> None:
    """What a role needs (the same rules for a new account and a new assignment)."""
    if role == "grid_worker" and not grids:
        raise _invalid("a grid worker needs at least one grid", "grid", "grid_required")
    if known_grids is not None:
        unknown = [g for g in grids if g not in known_grids]
        if unknown:
            raise _invalid(f"unknown grid code(s): {', '.join(unknown)}", "grid",
                           "unknown_grids", codes=unknown)
    if role == "field_staff" and org_id is None:
        raise _invalid("field staff belong to an organisation", "org", "org_required")
    if area_code is not None and len(area_code) > 32:
        raise _invalid("area code must be at most 32 characters", "area_code",
                       "unknown_area", code=area_code)
    if known_areas is not None and role == "planner":
        if area_code is None:
            raise _invalid("a planner needs an area: a street or community code",
                           "area_code", "area_required")
        if area_code not in known_areas:
            raise _invalid(f"area {area_code!r} is not a street or community code of the "
                           "active layers", "area_code", "unknown_area", code=area_code)


def _same_username(conn, username: str) -> str | None:
    """The existing username equal to ``username`` without regard to case, if any.
    Compared in Python: SQLite's lower() folds ASCII only."""
    wanted = username.casefold()
    names = conn.execute(sa.select(users.c.username)).scalars().all()
    exact = [n for n in names if n == username]
    if exact:
        return exact[0]
    return next((n for n in names if n.casefold() == wanted), None)


# A user's session generation lives in the key/value table ``meta`` (one row per user who
# ever logged out), so that ending sessions needed no schema change. Absent means 0.
def _generation_key(user_id: int) -> str:
    """The ``meta`` key of a user's session generation."""
    return f"sessions.{int(user_id)}"


def _generation(conn, user_id: int) -> int:
    """The user's session generation on ``conn`` (0 until their first logout)."""
    value = conn.execute(sa.select(meta_table.c.value).where(
        meta_table.c.key == _generation_key(user_id))).scalar()
    return int(value) if value is not None else 0


def _next_generation(conn, user_id: int) -> None:
    """Move the user's session generation on, inside the caller's write transaction (an
    upsert: two first logouts at once must not collide on the new row)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(meta_table).values(key=_generation_key(user_id), value="1")
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[meta_table.c.key],
        set_={"value": sa.cast(sa.cast(meta_table.c.value, sa.Integer) + 1, sa.String)}))


class Accounts:
    """Accounts stored next to the cases (same database, same transactions rules).

    The users of API tokens are cached per process (every API request carries a token;
    looking it up was about a tenth of a report's cost in bench/intake.py). An entry
    serves only while the store's accounts stamp (:meth:`CaseStore.accounts_stamp`) is
    the one read before it was looked up, and for at most :attr:`TOKEN_CACHE_SECONDS`.
    Every change made here moves the stamp after it commits: on SQLite a file beside the
    database (a revoked token or a changed grid assignment counts from the next request,
    in every process on the machine); on PostGIS a notification every worker listens for
    (it counts within milliseconds, on every machine; while a worker's listening
    connection is down it caches nothing). A change made outside Hemei (an SQL shell)
    counts within the TTL.
    """

    #: The longest a token's user is served from the cache.
    TOKEN_CACHE_SECONDS = 30.0
    #: Entries kept at most (the cache is emptied when full).
    TOKEN_CACHE_MAX = 1024

    def __init__(self, store):
        self.store = store
        self._tokens: dict[str, tuple[User, object, float]] = {}

    def _changed(self) -> None:
        self._tokens.clear()
        self.store.accounts_changed()

    # -- organisations --------------------------------------------------------
    def add_org(self, name: str, kind: str = "partner") -> int:
        """Create an organisation (a property company, partner unit or crew)."""
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise _invalid("organisation name must be 1–200 characters", "name",
                           "org_name_length")
        if kind not in ORG_KINDS:
            raise _invalid(f"kind must be one of {', '.join(ORG_KINDS)}", "kind", "org_kind")
        with self.store._write() as conn:
            if conn.execute(sa.select(organisations.c.id)
                            .where(organisations.c.name == name)).first():
                raise Conflict(f"an organisation named {name!r} exists", field="name",
                               details={"reason": "org_exists", "name": name})
            return conn.execute(sa.insert(organisations).values(
                name=name, kind=kind, created_at=utcnow())).inserted_primary_key[0]

    def orgs(self) -> list[dict]:
        with self.store._read() as conn:
            return [dict(r) for r in conn.execute(
                sa.select(organisations).order_by(organisations.c.name)).mappings()]

    def _org_where(self, cond, missing: str) -> dict:
        with self.store._read() as conn:
            row = conn.execute(sa.select(organisations).where(cond)).mappings().first()
        if row is None:
            raise NotFound(missing, field="org")
        return dict(row)

    def org_by_name(self, name: str) -> dict:
        """The organisation called ``name``; ``NotFound`` if none."""
        return self._org_where(organisations.c.name == name,
                               f"no organisation named {name!r}")

    def org(self, org_id: int) -> dict:
        """The organisation ``org_id``; ``NotFound`` if none."""
        return self._org_where(organisations.c.id == org_id,
                               f"no organisation with id {org_id}")

    # -- users ----------------------------------------------------------------
    def add_user(self, username: str, role: str, *, password: str | None = None,
                 display_name: str | None = None, grids: list[str] | None = None,
                 org_id: int | None = None, area_code: str | None = None,
                 known_grids: set[str] | None = None,
                 known_areas: set[str] | None = None) -> User:
        """Create a user. Grid workers need grids, field staff an organisation.

        ``known_grids`` / ``known_areas``: the grid codes and the street and community
        codes of the active layers. When given, every grid must be one of them, and a
        planner needs an area that is one of them (the CLI and the admin page pass both;
        without them a planner may have no area). The username must not exist in any
        case (``Wang`` is taken when ``wang`` is).
        """
        username = (username or "").strip()
        if not username or len(username) > 64:
            raise _invalid("username must be 1–64 characters", "username", "username_length")
        if role not in ROLES:
            raise _invalid(f"role must be one of {', '.join(ROLES)}", "role", "role")
        grids = sorted(set(grids or []))
        area_code = (area_code or "").strip() or None
        _check_assignment(role, grids, org_id, area_code, known_grids, known_areas)
        if display_name is not None and len(display_name) > 100:
            raise _invalid("display name must be at most 100 characters", "display_name",
                           "display_name_length")
        _check_password(password)
        with self.store._write() as conn:
            taken = _same_username(conn, username)
            if taken is not None:
                raise Conflict(
                    f"user {username!r} exists" if taken == username else
                    f"user {taken!r} exists; usernames are compared without regard to case",
                    field="username", details={"reason": "username_taken", "name": taken})
            uid = conn.execute(sa.insert(users).values(
                username=username, display_name=display_name or username, role=role,
                org_id=org_id, area_code=area_code,
                password_hash=hash_password(password) if password else None,
                active=True, created_at=utcnow())).inserted_primary_key[0]
            if grids:
                conn.execute(sa.insert(user_grids),
                             [{"user_id": uid, "grid_code": g} for g in grids])
        return self.get(uid)

    def assign(self, user_id: int, grids: list[str], org_id: int | None, *,
               known_grids: set[str] | None = None) -> User:
        """Replace a user's grids and organisation together (one transaction), with the
        rules :meth:`add_user` applies: a grid worker keeps at least one grid, field staff
        keep an organisation. ``NotFound`` for an unknown user."""
        user = self.get(user_id)
        grids = sorted(set(grids or []))
        _check_assignment(user.role, grids, org_id, None, known_grids, None)
        with self.store._write() as conn:
            conn.execute(sa.delete(user_grids).where(user_grids.c.user_id == user_id))
            if grids:
                conn.execute(sa.insert(user_grids),
                             [{"user_id": user_id, "grid_code": g} for g in grids])
            conn.execute(sa.update(users).where(users.c.id == user_id).values(org_id=org_id))
        self._changed()
        return self.get(user_id)

    def set_grids(self, user_id: int, grids: list[str]) -> User:
        """Replace a user's grid assignment."""
        with self.store._write() as conn:
            conn.execute(sa.delete(user_grids).where(user_grids.c.user_id == user_id))
            if grids:
                conn.execute(sa.insert(user_grids),
                             [{"user_id": user_id, "grid_code": g} for g in sorted(set(grids))])
        self._changed()
        return self.get(user_id)

    def set_org(self, user_id: int, org_id: int | None) -> User:
        with self.store._write() as conn:
            conn.execute(sa.update(users).where(users.c.id == user_id).values(org_id=org_id))
        self._changed()
        return self.get(user_id)

    def set_password(self, user_id: int, password: str) -> None:
        """Set a new password; the user's web sessions end (they log in with the new one).
        ``NotFound`` for an unknown user."""
        if not password:
            raise _invalid("password must be at least 8 characters", "password",
                           "password_length")
        _check_password(password)
        self.get(user_id)
        with self.store._write() as conn:
            conn.execute(sa.update(users).where(users.c.id == user_id)
                         .values(password_hash=hash_password(password)))
            _next_generation(conn, user_id)
        self._changed()

    def set_active(self, user_id: int, active: bool) -> User:
        """Deactivate or reactivate an account. A deactivated user can neither log in nor
        use an API token, from the next request on in every worker (the accounts stamp
        moves); their web sessions end for good (reactivating does not revive them),
        while their tokens work again once reactivated (revoke them to end them)."""
        self.get(user_id)
        with self.store._write() as conn:
            conn.execute(sa.update(users).where(users.c.id == user_id)
                         .values(active=bool(active)))
            if not active:
                _next_generation(conn, user_id)
        self._changed()
        return self.get(user_id)

    # -- web sessions ---------------------------------------------------------
    def session_generation(self, user_id: int) -> int:
        """The user's session generation: a session is valid only while it carries this."""
        with self.store._read() as conn:
            return _generation(conn, user_id)

    def end_sessions(self, user_id: int) -> None:
        """End every web session of the user (logout): the generation moves on."""
        with self.store._write() as conn:
            _next_generation(conn, user_id)

    def session_user(self, user_id: int, generation: int) -> User | None:
        """The user of a web session: None if unknown, deactivated, or if the session's
        ``generation`` is not the user's current one (logged out since, password reset)."""
        with self.store._read() as conn:
            user = _load_user(conn, _USER_BY_ID, {"uid": user_id})
            if user is None or not user.active:
                return None
            if _generation(conn, user_id) != generation:
                return None
        return user

    def get(self, user_id: int) -> User:
        """The user ``user_id`` with their grids and organisation; ``NotFound`` if none."""
        with self.store._read() as conn:
            user = _load_user(conn, _USER_BY_ID, {"uid": user_id})
        if user is None:
            raise NotFound(f"no user with id {user_id}", field="user")
        return user

    def by_username(self, username: str) -> User:
        with self.store._read() as conn:
            uid = conn.execute(sa.select(users.c.id)
                               .where(users.c.username == username)).scalar()
        if uid is None:
            raise NotFound(f"no user {username!r}", field="username")
        return self.get(uid)

    def all(self) -> list[User]:
        with self.store._read() as conn:
            ids = conn.execute(sa.select(users.c.id).order_by(users.c.username)).scalars().all()
        return [self.get(i) for i in ids]

    def username_clashes(self) -> list[list[str]]:
        """Groups of usernames that differ only in case (made before usernames were
        compared without regard to case): each group, sorted, is one person or a mistake
        an administrator should resolve."""
        with self.store._read() as conn:
            names = conn.execute(sa.select(users.c.username)).scalars().all()
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(name.casefold(), []).append(name)
        return sorted(sorted(g) for g in groups.values() if len(g) > 1)

    def stale_assignments(self, grid_codes: set[str],
                          area_codes: set[str]) -> dict[str, list[str]]:
        """Username → the codes assigned to the user that no longer exist: grids not in
        ``grid_codes``, a planner's area not in ``area_codes`` (after a boundary import
        dropped or re-coded them). Users with nothing stale are left out."""
        stale: dict[str, list[str]] = {}
        for user in self.all():
            gone = [g for g in user.grids if g not in grid_codes]
            if user.area_code and user.area_code not in area_codes:
                gone.append(user.area_code)
            if gone:
                stale[user.username] = gone
        return stale

    def authenticate(self, username: str, password: str) -> User | None:
        """The active user whose password matches, else None (same work either way)."""
        with self.store._read() as conn:
            row = conn.execute(sa.select(users.c.id, users.c.password_hash, users.c.active)
                               .where(users.c.username == (username or ""))).first()
        # Hash even for unknown users so timing does not reveal who exists.
        ok = check_password(row[1] if row else hash_password("x" * 12), password or "")
        if row is None or not ok or not row[2]:
            return None
        return self.get(row[0])

    # -- tokens ---------------------------------------------------------------
    def create_token(self, user_id: int, label: str = "") -> str:
        """A new API token for the user; returned once, stored only as a digest."""
        token = "hm_" + secrets.token_urlsafe(32)
        with self.store._write() as conn:
            conn.execute(sa.insert(api_tokens).values(
                user_id=user_id, digest=_digest(token), prefix=token[:10], label=label,
                created_at=utcnow()))
        return token

    def user_for_token(self, token: str) -> User | None:
        """The active user owning an unrevoked token, else None. This runs on every API
        request that carries a token: from the cache (see the class) or by one
        statement, built once, run without a transaction around it
        (``store.query_rows``)."""
        digest = _digest(token or "")
        # Read before the look-up: a change committed after it moves the stamp past it.
        stamp = self.store.accounts_stamp()
        if stamp is not None:
            hit = self._tokens.get(digest)
            if hit is not None and hit[1] == stamp and time.monotonic() < hit[2]:
                return replace(hit[0], grids=list(hit[0].grids))  # callers may mutate
        user = _user_from_rows(self.store.query_rows(_USER_BY_TOKEN, {"digest": digest}))
        if user is None or not user.active:
            return None  # unknown tokens are not cached: a new one works at once
        if stamp is not None:
            if len(self._tokens) >= self.TOKEN_CACHE_MAX:
                self._tokens.clear()
            self._tokens[digest] = (replace(user, grids=list(user.grids)), stamp,
                                    time.monotonic() + self.TOKEN_CACHE_SECONDS)
        return user

    def revoke_token(self, prefix_or_token: str) -> int:
        """Revoke a token by its value or its 10-character prefix. Returns how many."""
        cond = (api_tokens.c.digest == _digest(prefix_or_token)
                if len(prefix_or_token) > 12 else api_tokens.c.prefix == prefix_or_token)
        with self.store._write() as conn:
            n = conn.execute(sa.update(api_tokens).where(cond, api_tokens.c.revoked_at
                                                         .is_(None))
                             .values(revoked_at=utcnow())).rowcount
        self._changed()
        return n

    def tokens(self, user_id: int | None = None) -> list[dict]:
        """The API tokens of a user (or of everyone), oldest first: ``id``, ``user_id``,
        ``username``, ``prefix`` (the first 10 characters), ``label``, ``created_at``,
        ``revoked_at`` (None while it works). Never the token itself: only its digest is
        stored."""
        query = (sa.select(api_tokens.c.id, api_tokens.c.user_id, users.c.username,
                           api_tokens.c.prefix, api_tokens.c.label, api_tokens.c.created_at,
                           api_tokens.c.revoked_at)
                 .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
                 .order_by(api_tokens.c.id))
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        with self.store._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def revoke_token_id(self, token_id: int, user_id: int) -> int:
        """Revoke the token ``token_id`` of user ``user_id`` (the admin page's button).
        Returns 1, or 0 if it was revoked already; ``NotFound`` if the user has no such
        token."""
        with self.store._write() as conn:
            found = conn.execute(sa.select(api_tokens.c.revoked_at).where(
                api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)).first()
            if found is None:
                raise NotFound(f"user {user_id} has no token {token_id}", field="token")
            n = conn.execute(sa.update(api_tokens).where(
                api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())).rowcount
        self._changed()
        return n

    # -- patrol check-ins -----------------------------------------------------
    def check_in(self, user: User, lon: float, lat: float, grid_code: str | None,
                 accuracy_m: float | None = None) -> dict:
        """Record a patrol check-in at the worker's position. A check-in by the same
        person less than 30 seconds after their last one is the same tap again (a slow
        connection): nothing is written and the earlier check-in comes back, marked
        ``repeat: True``."""
        from datetime import timedelta

        repeat_s = 30  # nobody patrols two places half a minute apart
        now = utcnow()
        with self.store._write() as conn:
            # Looked up in the write transaction, so two taps cannot both miss each other.
            last = conn.execute(
                sa.select(checkins.c.id, checkins.c.grid_code, checkins.c.at)
                .where(checkins.c.user_id == user.id,
                       checkins.c.at >= now - timedelta(seconds=repeat_s))
                .order_by(checkins.c.at.desc()).limit(1)).first()
            if last is not None:
                return {"id": last[0], "grid_code": last[1], "at": last[2], "repeat": True}
            cid = conn.execute(sa.insert(checkins).values(
                user_id=user.id, grid_code=grid_code, lon=lon, lat=lat,
                accuracy_m=accuracy_m, at=now)).inserted_primary_key[0]
            self.store._bump(conn)
        return {"id": cid, "grid_code": grid_code, "at": now, "repeat": False}

    def last_patrolled(self) -> dict[str, object]:
        """Grid code → time of the latest check-in (aggregated in the database)."""
        with self.store._read() as conn:
            rows = conn.execute(sa.select(checkins.c.grid_code, sa.func.max(checkins.c.at))
                                .where(checkins.c.grid_code.is_not(None))
                                .group_by(checkins.c.grid_code)).fetchall()
        return {r[0]: r[1] for r in rows}
