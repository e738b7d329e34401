"""Shared pytest fixtures. Each section belongs to one group of tests; add new fixtures below."""

import pytest

# --- pulumi_program: the Pulumi program under mocks -------------------------------------------
#
# `pulumi_program(stack, config=..., secrets=..., plain=..., remove=...)` runs `__main__.py` for
# `Pulumi.<stack>.yaml` under Pulumi mocks and returns a `ProgramRun`: every declared resource
# with its inputs, the paths of its secret inputs and its options (such as `protect`), plus the
# stack outputs and which of them are secret. `apiMetricsToken` is set to a test value as a secret
# unless a test removes it. A run that raises stores the exception in `ProgramRun.error`.
# See tests/pulumi_harness.py for the details.

from pulumi_harness import ProgramRun, run_program


@pytest.fixture
def pulumi_program():
    """Return the function that runs the Pulumi program under mocks (`run_program`)."""
    return run_program


@pytest.fixture(scope="session")
def dev_run() -> ProgramRun:
    """Return one run of the dev stack as committed, shared by every test that only reads it."""
    run = run_program("dev")
    if run.error is not None:
        raise run.error
    return run


@pytest.fixture(scope="session")
def prod_run() -> ProgramRun:
    """Return one run of the prod stack as committed, shared by every test that only reads it."""
    run = run_program("prod")
    if run.error is not None:
        raise run.error
    return run


# --- end of the pulumi_program section ---------------------------------------------------------
