"""Celery entry point for the scheduler: `celery -A orchestrator.beat worker -B -Q control`
(what `orchestrator beat` runs). Configured by FLEET_SCHEDULE, FLEET_SCHEDULE_DEVICES,
FLEET_CATALOG, FLEET_REPORTS_DIR and FLEET_SCHEDULE_DEADLINE."""

from orchestrator.schedule import make_beat_app

app = make_beat_app()
