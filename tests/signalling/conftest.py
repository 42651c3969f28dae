import pytest
from channels.db import database_sync_to_async
from django.db import connections

from signalling.hub import stop_hub


@pytest.fixture(autouse=True)
async def _hub():
    """Each test's event loop gets its own hub; stop it with the loop."""
    yield
    await stop_hub()
    # The access checks ran in asgiref's worker thread: close its connection, or the test
    # database cannot be dropped at the end of the run.
    await database_sync_to_async(connections.close_all)()
