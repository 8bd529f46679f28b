"""Beijing time, the street office's clock and calendar.

Every stored timestamp is naive UTC. Everything a person reads — a month, a day, a week,
"to date (…)", the time of an export or a report — is Beijing time: China has one time
zone, UTC+8, and no daylight saving time, so the offset is a constant and converting is
adding or subtracting eight hours (no time-zone database needed, the same in SQL).

Calendar periods (:func:`gis.coverage.parse_period`) are Beijing calendar months and days:
``2026-10`` is ``[2026-09-30 16:00, 2026-10-31 16:00)`` in naive UTC.

Names: ``*_utc`` values are naive UTC instants (how times are stored and compared);
``local`` values are naive Beijing wall-clock times (for calendars and for reading).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

__all__ = [
    "BEIJING", "BEIJING_HOURS", "beijing_date", "beijing_midnight", "format_beijing",
    "from_beijing", "is_beijing_midnight", "to_beijing",
]

#: Beijing time = UTC + 8 hours (China Standard Time, no daylight saving).
BEIJING_HOURS = 8
BEIJING = timedelta(hours=BEIJING_HOURS)


def to_beijing(t_utc: datetime) -> datetime:
    """A stored time (naive UTC) as the naive Beijing wall-clock time."""
    return t_utc + BEIJING


def from_beijing(local: datetime) -> datetime:
    """A naive Beijing wall-clock time as the naive UTC instant it is."""
    return local - BEIJING


def beijing_midnight(day: date) -> datetime:
    """The naive UTC instant at which the Beijing day ``day`` begins (16:00 UTC the day
    before)."""
    return from_beijing(datetime.combine(day, time.min))


def beijing_date(t_utc: datetime) -> date:
    """The Beijing calendar day of a stored time (naive UTC)."""
    return to_beijing(t_utc).date()


def is_beijing_midnight(t_utc: datetime) -> bool:
    """Whether the naive UTC instant ``t_utc`` is 00:00 Beijing time (a day boundary of the
    street office's calendar)."""
    local = to_beijing(t_utc)
    return local == datetime.combine(local.date(), time.min)


def format_beijing(t_utc: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time (naive UTC) formatted as Beijing time; "—" for none."""
    return to_beijing(t_utc).strftime(fmt) if t_utc else "—"
