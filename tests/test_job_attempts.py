"""A job message's max_attempts is a whole number from 1: run_check gives up once
delivery > int(max_attempts), so a fraction below 1 made the first delivery give up, storing
FAILED worker_lost for a job nothing ran (scripts/adversary/fractional_max_attempts.py)."""

import pytest

from fleet.catalog import load_catalog
from fleet.jobs import MAX_ATTEMPTS, job_problem
from fleet.settings import RunSettings
from orchestrator.submit import plan_jobs


@pytest.fixture(scope="module")
def job():
    (planned,) = plan_jobs("run-1", load_catalog(), ["minilm"], ["cpu"], RunSettings())
    return planned


def test_a_planned_job_is_sound(job):
    assert job_problem(job) is None
    assert job_problem({**job, "max_attempts": 1}) is None
    assert job_problem({**job, "max_attempts": MAX_ATTEMPTS}) is None


@pytest.mark.parametrize("value", [0.5, 0.999, 2.5, True, 0, -1, MAX_ATTEMPTS + 1, "3", None])
def test_max_attempts_that_is_no_whole_number_from_1_is_refused(job, value):
    problem = job_problem({**job, "max_attempts": value})
    assert problem is not None and "max_attempts" in problem
