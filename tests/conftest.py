import os
import re

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the machine: one torch thread each, so neither oversubscribes it.
    torch.set_num_threads(1)


# The files that take longest, longest first (`--durations` of a full run with SLURM and
# PostgreSQL): the README's `-n 2 --dist loadfile --no-loadscope-reorder` hands files to the
# two processes in collection order, so the SLURM file (about 9 minutes of real time limits
# and requeues) starts at once instead of last, and the rest balance around it.
LONGEST_FIRST = ("test_slurm.py", "test_workers.py", "test_supernet_train.py", "test_latency_backends.py",
                 "test_benchmarks.py", "test_hardware.py", "test_end_to_end.py", "test_bad_inputs.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, stays


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _service(make, unavailable: type, what: str, require: str):
    """Start a real service for the session: `make()` builds it, `.start()` returns what the
    tests get and `.stop()` ends it. Without it the tests skip with the reason, or fail when
    the environment variable `require` is 1 (as in CI)."""
    service = None
    try:
        service = make()
        started = service.start()
    except unavailable as err:
        if service is not None:
            service.stop()
        if os.environ.get(require) == "1":
            pytest.fail(f"{what} is required here ({require}=1): {err}")
        pytest.skip(str(err))
    try:
        yield service, started
    finally:
        service.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for this test session (its URL)."""
    from tests.extras import need
    from tests.pg_server import PostgresUnavailable, Server

    need("psycopg2", "postgres")
    for _, url in _service(Server, PostgresUnavailable, "PostgreSQL", "NAS_REQUIRE_POSTGRES"):
        yield url


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server, named for the test."""
    from tests.pg_server import create_database

    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return create_database(postgres_server, name)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster with accounting for this test session (its `Cluster`)."""
    from tests.slurm_cluster import Cluster, SlurmUnavailable

    for cluster, _ in _service(Cluster, SlurmUnavailable, "SLURM", "NAS_REQUIRE_SLURM"):
        yield cluster

