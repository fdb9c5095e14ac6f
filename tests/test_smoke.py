from fastapi.testclient import TestClient

from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.testing import post_file


def test_upload_then_drain_succeeds(
    client: TestClient, dispatcher: InMemoryDispatcher, worker: LocalWorker
) -> None:
    response = post_file(client, b"one two\nthree\n")
    assert response.status_code == 202
    job = response.json()
    assert dispatcher.submitted == [job["id"]]
    assert worker.drain() == 1
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    assert done["result"]["words"] == 3
