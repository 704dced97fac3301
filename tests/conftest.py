import os
import re

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the machine: one torch thread each, so neither oversubscribes it.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for this test session (skips without PostgreSQL,
    fails instead when NAS_REQUIRE_POSTGRES=1, as in CI)."""
    from tests.extras import need
    from tests.pg_server import PostgresUnavailable, Server

    need("psycopg2", "postgres")
    server = None
    try:
        server = Server()
        url = server.start()
    except PostgresUnavailable as err:
        if server is not None:
            server.stop()
        if os.environ.get("NAS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (NAS_REQUIRE_POSTGRES=1): {err}")
        pytest.skip(str(err))
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server, named for the test."""
    from tests.pg_server import create_database

    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return create_database(postgres_server, name)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster with accounting for this test session (skips without SLURM's
    packages, fails instead when NAS_REQUIRE_SLURM=1, as in CI)."""
    from tests.slurm_cluster import Cluster, SlurmUnavailable

    cluster = None
    try:
        cluster = Cluster()
        cluster.start()
    except SlurmUnavailable as err:
        if os.environ.get("NAS_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM is required here (NAS_REQUIRE_SLURM=1): {err}")
        pytest.skip(str(err))
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(config, items):
    """The SLURM tests first: they wait on the scheduler for minutes, mostly idle, so with
    two test processes the other one runs the rest of the suite meanwhile."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_slurm.py")
