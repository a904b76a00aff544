// The WebSocket client: authenticates with the session cookie, follows channels,
// and resumes after a reconnect without duplicates or gaps: every channel frame
// carries a per-channel `seq`; we re-subscribe with `since` = the last seq seen
// (and the server's epoch). Frames at or below that seq are dropped; a `resync`
// answer means the gap is too old, and the listener reloads that channel.
export class Socket {
  constructor(onFrame, onState) {
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.channels = new Map(); // channelId -> last seq seen (null: not yet known)
    this.epoch = null;
    this.ws = null;
    this.retry = 0;
    this.closedByUs = false;
    this.pingTimer = null;
    this.state = "connecting";
  }

  connect() {
    this.closedByUs = false;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    this.ws = ws;
    this.setState("connecting");
    ws.onopen = () => {
      this.retry = 0;
      // The cookie authenticated the upgrade: the socket is live now, whether or not there are
      // channels to follow (an account without chats never gets a "subscribed" answer).
      this.setState("online");
      // The session cookie on the upgrade request authenticates us (the HttpOnly
      // token is not readable here, so no auth frame is sent).
      for (const channelId of this.channels.keys()) this.sendSubscribe(channelId);
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.sendRaw({ type: "ping" }), 25000);
    };
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      clearInterval(this.pingTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closedByUs) { this.setState("closed"); return; }
      this.setState("reconnecting");
      const delay = Math.min(10000, 300 * 2 ** this.retry) * (0.75 + Math.random() * 0.5);
      this.retry += 1;
      this.timer = setTimeout(() => this.connect(), ev.code === 4401 ? 60000 : delay);
    };
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  setState(s) { this.state = s; this.onState(s); }

  sendRaw(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  send(type, data) { return this.sendRaw({ type, data }); }

  sendSubscribe(channelId) {
    const since = this.channels.get(channelId);
    const data = { channelId };
    if (since !== null && since !== undefined) {
      data.since = since;
      if (this.epoch) data.epoch = this.epoch;
    }
    this.sendRaw({ type: "subscribe", channelId, data });
  }

  // Subscribe again from an earlier point (a page read at `since`): the frames after it come again;
  // the views drop what they already have.
  resume(channelId, since, epoch) {
    if (typeof since !== "number") return;
    this.channels.set(channelId, since);
    if (epoch) this.epoch = epoch;
    this.sendSubscribe(channelId);
  }

  follow(channelId) {
    if (this.channels.has(channelId)) return;
    this.channels.set(channelId, null);
    this.sendSubscribe(channelId);
  }

  handle(frame) {
    const data = frame.data || {};
    if (frame.type === "auth_ok") this.setState("online");
    if (frame.type === "subscribed") {
      this.setState("online");
      if (data.epoch) this.epoch = data.epoch;
      const cur = this.channels.get(data.channelId);
      if (cur === null || cur === undefined) this.channels.set(data.channelId, data.seq);
    } else if (frame.type === "resync") {
      if (data.epoch) this.epoch = data.epoch;
      if (data.channelId) {
        this.channels.set(data.channelId, data.seq ?? null);
      }
    } else if (frame.seq !== undefined && frame.channelId) {
      const last = this.channels.get(frame.channelId);
      if (last !== null && last !== undefined && frame.seq <= last) return; // a duplicate
      this.channels.set(frame.channelId, frame.seq);
    }
    this.onFrame(frame);
  }
}
