"""Crontab lines as the settings take them (retraining's schedule), read by APScheduler."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expression: str) -> CronTrigger:
    """A trigger for a standard crontab line, in UTC; ValueError names what is wrong with it.

    APScheduler numbers weekdays from Monday (0) where crontab numbers them from Sunday (0 or 7);
    numbers in the weekday field are turned into names, which both read the same way.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields[4] = re.sub(r"(?<![/\d])\d+", _day_name, fields[4])
    trigger = CronTrigger.from_crontab(" ".join(fields), timezone=UTC)
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError("no date matches it, so it would never run")
    return trigger


def _day_name(number: re.Match[str]) -> str:
    day = int(number.group())
    if day > 7:
        raise ValueError(f"weekday {day} is not 0-7 (0 and 7: Sunday)")
    return _DAYS[day % 7]
