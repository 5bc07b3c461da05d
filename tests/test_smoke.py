from tests.conftest import enquiry_body


async def test_submit_and_read_back(client, app):
    created = await client.post("/v1/enquiries", json=enquiry_body())
    assert created.status_code == 201, created.text
    await app.state.dispatcher.run_until_idle()
    read = await client.get(f"/v1/enquiries/{created.json()['reference']}")
    assert read.json()["status"] == "dispatched"
