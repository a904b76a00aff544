"""The WebSocket hub: connections, channel subscriptions, fan-out, replay, backpressure.

Every frame pushed to a channel gets the channel's next sequence number and is
kept in a bounded replay buffer, so a client that re-subscribes with ``since``
receives exactly what it missed, or a ``resync`` frame when the gap is too old
(or the server restarted: ``epoch`` changes with each start). Each connection
has a bounded queue drained by its own sender task: a slow client never delays
the others, and one that overflows is told to resync and dropped.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from . import jsonio
from .errors import Unauthorized
from .models import Actor

log = logging.getLogger("xiajiao.realtime")


def encode(frame: dict) -> str:
    return jsonio.dumps(frame)


@dataclass
class ChannelState:
    seq: int = 0
    buffer: deque = field(default_factory=deque)  # (seq, encoded frame)
    subscribers: set = field(default_factory=set)


class Connection:
    """One WebSocket: who it is, what it follows, and its outgoing queue."""

    def __init__(self, hub: "Hub", send, close, *, queue_size: int):
        self.hub = hub
        self._send = send
        self._close = close
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        self.actor: Actor | None = None
        self.channels: set[str] = set()
        self.closed = False
        self.close_code: int | None = None
        self.credential: str | None = None  # hash of the session token or API key that authenticated it
        self.sender: asyncio.Task | None = None
        self.strikes = 0  # frames refused before auth
        self.app: Any = None  # the core, for frame handlers
        self.address = ""  # the client's address (rate limits before login)

    @property
    def caller(self) -> Actor:
        """The authenticated caller (frames other than auth and ping are only handled after auth)."""
        if self.actor is None:
            raise Unauthorized("Send a session token or API key", "invalid_token")
        return self.actor

    def start(self) -> None:
        self.sender = asyncio.get_running_loop().create_task(self._drain())

    def offer(self, text: str) -> bool:
        """Queue a frame; on overflow the client is told to resync and dropped."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.overflow()
            return False

    def send_frame(self, type_: str, data: Any = None, **top: Any) -> bool:
        frame = {"type": type_, **top}
        if data is not None:
            frame["data"] = data
        return self.offer(encode(frame))

    def overflow(self) -> None:
        if self.closed:
            return
        log.warning("slow websocket dropped", extra={"user": self.actor.id if self.actor else None})
        # make room for the last word, then close
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(encode({"type": "resync", "data": {"reason": "slow_client",
                                                                  "channels": sorted(self.channels)}}))
        self.queue.put_nowait(None)
        self.close_code = 1008
        self.hub.detach(self)
        self.closed = True
        # a client that reads nothing at all never takes the last word; drop it anyway
        asyncio.get_running_loop().call_later(5.0, self._force_close)

    def _force_close(self) -> None:
        if self.sender is not None and not self.sender.done():
            self.sender.cancel()  # its finally closes the socket with close_code

    async def _drain(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                if text is None:
                    break
                await self._send(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive loop notices and cleans up
            pass
        finally:
            self.closed = True
            if self.close_code is not None:
                try:
                    await self._close(self.close_code)
                except Exception:  # already closed by the peer
                    pass

    async def shutdown(self, code: int = 1001) -> None:
        if self.sender and not self.sender.done():
            self.close_code = code
            if not self.closed:
                try:
                    self.queue.put_nowait(None)
                except asyncio.QueueFull:
                    self.sender.cancel()
            self.closed = True
            try:
                await asyncio.wait_for(asyncio.shield(self.sender), 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self.sender.cancel()
        try:
            await self._close(code)
        except Exception:  # closing twice is fine
            pass


class Hub:
    def __init__(self, *, replay_size: int = 2000, queue_size: int = 1000, replay_channels: int = 1000):
        self.replay_size = replay_size
        self.queue_size = queue_size
        self.replay_channels = max(1, replay_channels)
        self.epoch = secrets.token_hex(4)
        # most recently used last; channels nobody follows are evicted past ``replay_channels``
        self.channels: OrderedDict[str, ChannelState] = OrderedDict()
        # the last sequence number of each evicted channel, so numbering never restarts
        self._evicted_seq: dict[str, int] = {}
        self.connections: set[Connection] = set()

    # -- connections

    def connect(self, send, close) -> Connection:
        conn = Connection(self, send, close, queue_size=self.queue_size)
        self.connections.add(conn)
        conn.start()
        return conn

    def detach(self, conn: Connection) -> None:
        for ch in conn.channels:
            state = self.channels.get(ch)
            if state:
                state.subscribers.discard(conn)
        conn.channels.clear()
        self.connections.discard(conn)

    async def disconnect(self, conn: Connection) -> None:
        self.detach(conn)
        if conn.sender and not conn.sender.done():
            conn.sender.cancel()
            try:
                await conn.sender
            except (asyncio.CancelledError, Exception):
                pass

    async def close_all(self, code: int = 1001) -> None:
        conns = list(self.connections)
        for c in conns:
            self.detach(c)
        await asyncio.gather(*(c.shutdown(code) for c in conns), return_exceptions=True)

    async def disconnect_user(self, user_id: str, code: int = 1008) -> int:
        """Close every connection of a user (account disabled, deleted or changed)."""
        return await self._close_where(lambda c: c.actor is not None and c.actor.id == user_id, code)

    async def disconnect_credential(self, credential: str, code: int = 1008) -> int:
        """Close the connections authenticated by one session or API key (logout, revoked key)."""
        return await self._close_where(lambda c: c.credential == credential, code)

    async def _close_where(self, match, code: int) -> int:
        conns = [c for c in self.connections if match(c)]
        for c in conns:
            self.detach(c)
        await asyncio.gather(*(c.shutdown(code) for c in conns), return_exceptions=True)
        return len(conns)

    def online_users(self) -> set[str]:
        return {c.actor.id for c in self.connections if c.actor and c.actor.kind == "user"}

    # -- channels

    def _state(self, channel_id: str) -> ChannelState:
        state = self.channels.get(channel_id)
        if state is None:
            # an evicted channel keeps counting where it stopped; its replay buffer is gone,
            # so a client asking for that gap is told to resync
            state = self.channels[channel_id] = ChannelState(seq=self._evicted_seq.pop(channel_id, 0))
            self._evict()
        else:
            self.channels.move_to_end(channel_id)
        return state

    def _evict(self) -> None:
        """Forget the replay buffers of the least recently used channels nobody follows."""
        excess = len(self.channels) - self.replay_channels
        if excess <= 0:
            return
        for channel_id in list(self.channels):
            if excess <= 0:
                break
            state = self.channels[channel_id]
            if not state.subscribers:
                self._evicted_seq[channel_id] = state.seq
                del self.channels[channel_id]
                excess -= 1

    def subscribe(self, conn: Connection, channel_id: str, since: int | None = None,
                  epoch: str | None = None) -> dict:
        """Subscribe and replay; returns the ``subscribed`` data (or a resync notice)."""
        state = self._state(channel_id)
        resync = False
        replay: list[str] = []
        if since is not None:
            oldest = state.buffer[0][0] if state.buffer else state.seq + 1
            if (epoch and epoch != self.epoch) or since > state.seq or since < oldest - 1:
                resync = True
            else:
                replay = [text for seq, text in state.buffer if seq > since]
        state.subscribers.add(conn)
        conn.channels.add(channel_id)
        info = {"channelId": channel_id, "seq": state.seq, "epoch": self.epoch}
        if resync:
            conn.send_frame("resync", {"channelId": channel_id, "reason": "gap_too_old", "seq": state.seq,
                                       "epoch": self.epoch})
        else:
            conn.send_frame("subscribed", {**info, "replayed": len(replay)})
            for text in replay:
                if not conn.offer(text):
                    break
        return {**info, "resync": resync, "replayed": len(replay)}

    def seq_of(self, channel_id: str) -> int:
        """The channel's last frame number (a page read now plus the frames after it are the whole state)."""
        state = self.channels.get(channel_id)
        return state.seq if state else self._evicted_seq.get(channel_id, 0)

    def unsubscribe(self, conn: Connection, channel_id: str) -> None:
        state = self.channels.get(channel_id)
        if state:
            state.subscribers.discard(conn)
        conn.channels.discard(channel_id)

    def drop_channel(self, channel_id: str) -> None:
        """Forget a deleted channel: its subscribers, sequence and replay buffer."""
        self._evicted_seq.pop(channel_id, None)
        state = self.channels.pop(channel_id, None)
        if state:
            for conn in state.subscribers:
                conn.channels.discard(channel_id)

    def kick(self, channel_id: str, user_id: str) -> None:
        """Stop pushing a channel to a user's connections (removed from the channel)."""
        state = self.channels.get(channel_id)
        if not state:
            return
        for conn in list(state.subscribers):
            if conn.actor and conn.actor.id == user_id:
                self.unsubscribe(conn, channel_id)
                conn.send_frame("unsubscribed", {"channelId": channel_id, "reason": "removed"})

    def publish(self, channel_id: str, type_: str, data: dict) -> int:
        """Push a frame to the channel's subscribers; returns its sequence number."""
        state = self._state(channel_id)
        state.seq += 1
        text = encode({"type": type_, "data": data, "seq": state.seq, "channelId": channel_id})
        state.buffer.append((state.seq, text))
        if len(state.buffer) > self.replay_size:
            state.buffer.popleft()
        for conn in list(state.subscribers):
            conn.offer(text)
        return state.seq

    def send_to_user(self, user_id: str, type_: str, data: dict) -> int:
        """Push a frame to every connection of one user (not sequenced: personal notices)."""
        n = 0
        for conn in list(self.connections):
            if conn.actor and conn.actor.id == user_id:
                n += conn.send_frame(type_, data)
        return n

    def subscriber_count(self, channel_id: str) -> int:
        state = self.channels.get(channel_id)
        return len(state.subscribers) if state else 0
