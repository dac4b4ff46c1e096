from tests.conftest import World, open_ticket


async def test_dave_opens_and_bob_cannot_see_it(world: World) -> None:
    dave, bob = world.client("dave"), world.client("bob")
    ticket = await open_ticket(dave)
    assert ticket["team"]["name"] == "Support"
    assert (await bob.get(f"/api/v1/tickets/{ticket['number']}")).status_code == 404
