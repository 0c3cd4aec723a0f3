"""A client generated from the OpenAPI document, used against a running server.

It must import, and its typed calls must round-trip: register an event type, publish an
event, read it back and page through the list, create an endpoint, list the catalog, and
get a problem document back as the typed error it is declared to be.
"""
import sys

from switchboard_client import AuthenticatedClient
from switchboard_client.api.events import create_event, create_event_type, get_event, list_events
from switchboard_client.api.marketplace import list_integrations
from switchboard_client.api.webhooks import create_endpoint, list_endpoints
from switchboard_client.models import CreateEndpoint, CreateEvent, CreateEventType, Problem

base, key = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base, token=key, raise_on_unexpected_status=True)


def ok(answer, kind):
    assert isinstance(answer, kind), f"expected {kind.__name__}, got {answer!r}"
    return answer


ok(create_event_type.sync(client=client, body=CreateEventType(name="order.paid")), object)
created = create_event.sync(
    client=client,
    body=CreateEvent.from_dict({"event_type": "order.paid", "payload": {"order": 42}}),
)
assert created.id.startswith("evt_"), created
fetched = get_event.sync(client=client, event_id=created.id)
assert fetched.id == created.id and fetched.event_type == "order.paid", fetched
page = list_events.sync(client=client, limit=10)
assert [event.id for event in page.data] == [created.id], page
endpoint = create_endpoint.sync(client=client, body=CreateEndpoint(url="https://example.com/hook"))
assert endpoint.id.startswith("ep_") and endpoint.secret.startswith("whsec_"), endpoint
assert [e.id for e in list_endpoints.sync(client=client).data] == [endpoint.id]
catalog = list_integrations.sync(client=client, limit=100)
assert any(provider.name == "stripe" for provider in catalog.data), catalog
problem = create_event_type.sync(client=client, body=CreateEventType(name="order.paid"))
assert isinstance(problem, Problem) and problem.status == 409, problem
print("generated Python client: OK")
