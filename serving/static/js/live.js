// The live connection: EventSource on /v1/stream, with resume.
//
// EventSource reconnects by itself after a network drop (the server asks for 1 s with
// `retry:`) and sends Last-Event-ID; the server then answers with a `snapshot` of what we watch,
// so nothing published while we were away is missed. If the browser gives up (HTTP error while
// the API restarts: readyState CLOSED) we open a new EventSource ourselves, with backoff, passing
// the last id as `last_event_id` so the server sends the snapshot just the same.

import { API } from "./store.js";
import { parseJSON } from "./format.js";

export class LiveStream {
  constructor({ org = null, on = {} } = {}) {
    this.org = org;
    this.on = on; // {positions, snapshot, alerts, heartbeat, state}
    this.es = null;
    this.lastId = null;
    this.lastMessageAt = 0; // Date.now() of the latest frame of any kind
    this.lastPositionsAt = 0;
    this.serverLive = true; // the server's own Redis subscription (heartbeat.live)
    this.state = "connecting"; // connecting | live | reconnecting | closed
    this.reconnects = 0;
    this.backoff = 500;
    this.timer = null;
    this.stopped = false;
  }

  url(resume) {
    const u = new URL("v1/stream", API);
    if (this.org) u.searchParams.set("org", this.org);
    if (resume && this.lastId) u.searchParams.set("last_event_id", this.lastId);
    else u.searchParams.set("snapshot", "1"); // start from the current state, race-free
    return u;
  }

  start() {
    this.stopped = false;
    this.open(false);
    return this;
  }

  open(resume) {
    if (this.stopped) return;
    const es = new EventSource(this.url(resume));
    this.es = es;
    es.onopen = () => {
      this.backoff = 500;
      this.setState("live");
    };
    es.onerror = () => {
      if (this.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser will not retry (e.g. a 502/503 while the API restarts): we do.
        this.setState("reconnecting");
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.open(true), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10_000);
      } else {
        this.setState("reconnecting"); // the browser retries by itself, with Last-Event-ID
      }
      this.reconnects += 1;
    };
    for (const type of ["positions", "snapshot", "alerts", "heartbeat"]) {
      es.addEventListener(type, (e) => {
        if (this.es !== es) return;
        this.lastMessageAt = Date.now();
        if (e.lastEventId) this.lastId = e.lastEventId;
        if (this.state !== "live") this.setState("live");
        let data;
        try { data = parseJSON(e.data); } catch { return; }
        if (type === "heartbeat") this.serverLive = data.live !== false;
        if (type === "positions" || type === "snapshot") this.lastPositionsAt = Date.now();
        const fn = this.on[type];
        if (fn) fn(data, e.lastEventId);
      });
    }
  }

  setState(s) {
    this.state = s;
    if (this.on.state) this.on.state(s);
  }

  /** Drop the connection as a network failure would, and resume (used by tests and by the
   * "reconnect" button). */
  drop(delayMs = 0) {
    this.reconnects += 1;
    if (this.es) this.es.close();
    this.es = null;
    this.setState("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(true), delayMs);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
    this.setState("closed");
  }
}
