// The agent's live events: GET /api/ws, reconnecting by itself, resuming after the last event
// seen so that nothing is missed, and dropping what was already seen so that nothing shows twice.
//
// The last id travels in the URL (`resume_after`), not as the first message: the server then
// starts from it before it sends anything, so an event that happens while the socket opens
// cannot overtake the ones being replayed.
const RETRY_MS = [500, 1000, 2000, 4000, 8000];

export class Stream {
  constructor({ token, agentId, onFrame, onState }) {
    this.token = token;
    this.key = `chatdesk.last-event.${agentId}`;
    this.lastId = Number(sessionStorage.getItem(this.key) || 0);
    this.onFrame = onFrame;
    this.onState = onState;
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
    // Offline: drop the socket now rather than when the server's pings give up on it; online
    // again: reconnect now rather than at the next retry.
    this.offline = () => this.socket?.close();
    this.online = () => {
      clearTimeout(this.timer);
      if (this.socket?.readyState !== WebSocket.OPEN) this.connect();
    };
  }

  start() {
    addEventListener('offline', this.offline);
    addEventListener('online', this.online);
    this.connect();
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = new URLSearchParams({ token: this.token });
    if (this.lastId) query.set('resume_after', String(this.lastId));
    this.socket?.close();
    const socket = new WebSocket(`${scheme}//${location.host}/api/ws?${query}`);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.onState('open');
    };
    socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === 'error') return;
      const id = Number(frame.id);
      if (!(id > this.lastId)) return;
      this.lastId = id;
      sessionStorage.setItem(this.key, String(id));
      this.onFrame(frame);
    };
    socket.onclose = (event) => {
      if (this.closed || socket !== this.socket) return;
      if (event.code === 1008) {
        this.onState('refused'); // the token is no longer valid
        return;
      }
      this.onState('reconnecting');
      const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close() {
    removeEventListener('offline', this.offline);
    removeEventListener('online', this.online);
    this.closed = true;
    clearTimeout(this.timer);
    this.socket?.close();
  }
}
