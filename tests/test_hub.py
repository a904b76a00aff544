"""The hub's bounded memory: replay buffers of channels nobody follows are evicted, numbering goes on."""
from __future__ import annotations

import json

from xiajiao.realtime import Hub


class Sink:
    def __init__(self):
        self.frames = []

    async def send(self, text):
        self.frames.append(json.loads(text))

    async def close(self, code):
        pass


async def test_unfollowed_channels_are_evicted_and_their_numbering_goes_on():
    hub = Hub(replay_size=10, replay_channels=3)
    sink = Sink()
    conn = hub.connect(sink.send, sink.close)
    hub.subscribe(conn, "followed")
    for ch in ("followed", "a", "b", "c", "d"):
        hub.publish(ch, "message", {"n": 1})
        hub.publish(ch, "message", {"n": 2})
    # at most three channels keep buffers; the followed one is never evicted
    assert set(hub.channels) == {"followed", "c", "d"}
    evicted = ["a", "b"]
    # an evicted channel numbers on from where it stopped ...
    assert hub.publish(evicted[0], "message", {"n": 3}) == 3
    # ... and a client asking for the lost gap is told to resync, never replayed a wrong range
    late = Sink()
    other = hub.connect(late.send, late.close)
    info = hub.subscribe(other, evicted[0], since=1)
    assert info["resync"] is True
    info = hub.subscribe(other, evicted[0], since=2)
    assert info["resync"] is False and info["replayed"] == 1
    await hub.close_all()


async def test_dropping_a_channel_forgets_its_numbering():
    hub = Hub(replay_channels=1)
    hub.publish("x", "message", {})
    hub.publish("y", "message", {})  # evicts x
    assert "x" not in hub.channels
    hub.drop_channel("x")
    assert hub.publish("x", "message", {}) == 1
