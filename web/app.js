// The AIMCS audio client: streams the microphone to /ws/audio on this page's own origin.
//
// Two capture modes:
// - "original": what the original front end did, byte for byte on the wire: MediaRecorder
//   (audio/webm;codecs=opus) in 100 ms slices, each read as base64 and sent as
//   {"type":"audio","data":…,"timestamp":…}; no session. The server records it as one .webm
//   per connection.
// - "pcm": a declared session (session_start, PCM 16 kHz mono) fed by an AudioWorklet, in
//   binary frames, acknowledged one by one, resumed on a new connection after a drop.
//
// How a resume stays gap-free and duplicate-free (docs/protocol.md, "Resume"): the server
// numbers binary frames itself, one after the last stored chunk, starting at 1. So the page
// numbers every chunk it sends the same way and keeps it until its acknowledgement arrives.
// After a drop, `session_resumed` says the last number the server stored: kept chunks up to it
// are stored already (their acks were lost with the socket) and are let go; the others are
// resent as `audio` messages carrying their `seq` (a binary frame carries no number, so it
// cannot say "this is chunk 41 again"). New audio, including what was captured while
// disconnected, then goes on in binary frames, numbered after the last resent one.
//
// `window.aimcs` exposes the state and a `dropSocket()` for the end-to-end tests.

const PING_EVERY_MS = 2000;
const DEAD_AFTER_MS = 7000; // no message at all (pongs come every 2 s): the socket is dead
const OPEN_TIMEOUT_MS = 10000;
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 8000;
const LOG_LINES = 12;
const MAX_UNACKED = 150; // chunks sent and not yet acknowledged: 3 s of 20 ms chunks
const MAX_COALESCED_BYTES = 32000; // a backlog goes out in messages of up to 1 s of audio
const END_TIMEOUT_MS = 5000;
const PCM_FORMAT = { encoding: 'pcm_s16le', sampleRate: 16000, channels: 1 };
const BYTES_PER_SECOND = PCM_FORMAT.sampleRate * PCM_FORMAT.channels * 2;
// A resume the server cannot honour: the session is gone, start a new one.
const RESUME_FAILED = new Set([
  'session_not_found', 'session_expired', 'invalid_resume_token', 'invalid_resume', 'session_in_use',
]);
// A chunk the server did not store: not acknowledged, its reply is this error instead.
const CHUNK_REFUSED = new Set(['audio_not_stored', 'rate_limited', 'late_chunk', 'invalid_audio', 'invalid_seq']);

// ---------------------------------------------------------------------------------------
// The connection: one WebSocket at a time, reconnected with backoff while wanted, pinged.

/** A token bucket below the server's announced rate limit, so that no message is refused. */
class RateBudget {
  constructor() { this.configure(null, null); }

  configure(perSecond, burst) {
    this.rate = perSecond ? perSecond * 0.8 : Infinity;
    this.capacity = burst ? Math.max(1, Math.floor(burst / 2)) : Infinity;
    this.tokens = this.capacity;
    this.at = performance.now();
  }

  take() {
    if (this.rate === Infinity) return true;
    const now = performance.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

class Link {
  constructor(url, events) {
    this.url = url;
    this.events = events; // onReady(connection message), onMessage(message), onLost(why, code), onRefused(), onState()
    this.ws = null;
    this.state = 'disconnected'; // connecting, connected, reconnecting, disconnected
    this.wanted = false;
    this.ready = false; // the server's `connection` message arrived
    this.dialect = null; // null, 'original' or 'sessions': what this connection has carried
    this.attempt = 0;
    this.reconnects = 0;
    this.budget = new RateBudget();
    this.pings = [];
    this.rttMs = null;
    this.lastHeard = 0;
    this.timers = {};
  }

  get open() {
    return this.ready && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.wanted) return;
    this.wanted = true;
    this.attempt = 0;
    this.openSocket();
  }

  disconnect() {
    this.wanted = false;
    clearTimeout(this.timers.retry);
    this.detach(1000, 'client disconnect', false);
    this.setState('disconnected');
  }

  /** Closes this connection and opens a fresh one (a new recording needs a new connection). */
  renew() {
    this.detach(1000, 'new connection', false);
    this.wanted = true;
    this.attempt = 0;
    this.openSocket();
  }

  /** Drops the socket as a network failure would: no goodbye, then reconnects. */
  drop(reason) {
    if (!this.ws) return;
    this.detach(4000, 'dropped', true, reason);
  }

  /** Resolves once the server has greeted the current connection. */
  whenReady(timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.open) resolve();
        else if (performance.now() > deadline) reject(new Error('the server did not answer'));
        else setTimeout(check, 50);
      };
      check();
    });
  }

  sendJson(message) {
    this.ws.send(JSON.stringify(message));
  }

  sendBinary(bytes) {
    this.ws.send(bytes);
  }

  openSocket() {
    clearTimeout(this.timers.retry);
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this.events.onMessage({ type: 'note', message: `cannot open ${this.url}: ${error.message}` });
      this.scheduleRetry();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.ready = false;
    this.dialect = null;
    this.timers.open = setTimeout(() => {
      if (this.ws === ws && !this.ready) this.detach(4000, 'open timeout', true, 'no answer from the server');
    }, OPEN_TIMEOUT_MS);
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = performance.now();
      let message;
      try {
        message = JSON.parse(typeof event.data === 'string' ? event.data : new TextDecoder().decode(event.data));
      } catch {
        this.events.onMessage({ type: 'note', message: 'a message that is not JSON' });
        return;
      }
      if (message.type === 'connection') this.greeted(message);
      if (message.type === 'pong') this.ponged();
      this.events.onMessage(message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      const why = event.code === 1006 ? 'connection lost' : `closed ${event.code}${event.reason ? ` "${event.reason}"` : ''}`;
      this.ws = null;
      // Closed before the greeting: the upgrade was refused (a browser is not told why) or
      // nothing listens there.
      if (!this.ready) this.events.onRefused();
      this.lost(why, event.code);
    };
  }

  greeted(message) {
    clearTimeout(this.timers.open);
    this.ready = true;
    this.attempt = 0;
    const limits = message.limits || {};
    this.budget.configure(limits.maxMessagesPerSecond, limits.burst);
    this.pings = [];
    this.setState('connected');
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => this.ping(), PING_EVERY_MS);
    this.events.onReady(message);
    this.ping();
  }

  ping() {
    if (!this.open) return;
    if (performance.now() - this.lastHeard > DEAD_AFTER_MS) {
      this.detach(4000, 'no answer', true, 'no answer to pings');
      return;
    }
    if (!this.budget.take()) return;
    this.pings.push(performance.now());
    this.sendJson({ type: 'ping' });
  }

  ponged() {
    const sent = this.pings.shift();
    if (sent !== undefined) this.rttMs = performance.now() - sent;
  }

  // Forgets the current socket at once: whatever it still delivers is ignored, as if the
  // network had gone. `retry` reconnects, for failures; not for the user's own disconnect.
  detach(code, reason, retry, why = reason) {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      try { ws.close(code, reason); } catch { /* already closing */ }
    }
    if (retry) this.lost(why, code);
    else this.stopTimers();
    this.ready = false;
  }

  lost(why, code) {
    this.ready = false;
    this.stopTimers();
    this.events.onLost(why, code);
    if (this.wanted) this.scheduleRetry();
    else this.setState('disconnected');
  }

  scheduleRetry() {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** this.attempt);
    const delay = base * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.reconnects += 1;
    this.setState('reconnecting');
    this.timers.retry = setTimeout(() => { if (this.wanted) this.openSocket(); }, delay);
  }

  stopTimers() {
    clearTimeout(this.timers.open);
    clearInterval(this.timers.ping);
  }

  setState(state) {
    this.state = state;
    this.events.onState(state);
  }
}

// ---------------------------------------------------------------------------------------
// The PCM session: numbering, acknowledgements, resume.

const FNV1A_OFFSET = 2166136261;

/** FNV-1a, 32 bits, of `bytes` continuing from `hash`: a cheap fingerprint of the stream. */
function fnv1a(hash, bytes) {
  let h = hash;
  for (let i = 0; i < bytes.length; i += 1) {
    h = Math.imul(h ^ bytes[i], 16777619) >>> 0;
  }
  return h;
}

class PcmSession {
  constructor(link, events) {
    this.link = link;
    this.events = events; // onEvent(note), onEnded(message), onFailed(error)
    this.phase = 'idle'; // idle, starting, active, detached, resuming, lost, ending, ended
    this.pending = []; // captured, never sent: Uint8Arrays
    this.unacked = []; // sent, awaiting an ack: {seq, bytes}
    this.resend = []; // of `unacked`, to send again after a resume
    this.nextSeq = 1;
    this.session = null; // {sessionId, recordingId, resumeToken}
    this.previousSessionId = null;
    this.captureDone = false;
    this.lastAckedSeq = null;
    this.pumpTimer = null;
    this.stats = {
      capturedBytes: 0, capturedChunks: 0, sentChunks: 0, ackedChunks: 0, ackedBytes: 0,
      durationMs: 0, duplicates: 0, gaps: [], resent: 0, storedUnacked: 0, resumes: 0,
      sessionsLost: 0, refused: 0, seqMismatches: 0,
      // FNV-1a of every byte captured, in order: what the service must hold, exactly.
      capturedFnv1a: FNV1A_OFFSET,
    };
    this.ended = null;
  }

  get waiting() {
    return this.pending.length + this.unacked.length;
  }

  start() {
    this.phase = 'lost'; // "needs a session": started as soon as the link is ready
    if (this.link.open) this.onReady();
  }

  capture(bytes) {
    this.stats.capturedBytes += bytes.byteLength;
    this.stats.capturedFnv1a = fnv1a(this.stats.capturedFnv1a, bytes);
    this.stats.capturedChunks += 1;
    this.pending.push(bytes);
    this.pump();
  }

  /** Capture has stopped: end the session once everything captured has been sent. */
  finish() {
    this.captureDone = true;
    this.pump();
    return new Promise((resolve) => { this.whenEnded = resolve; });
  }

  onReady() {
    if (this.phase === 'detached') {
      this.phase = 'resuming';
      this.link.dialect = 'sessions';
      const resume = { type: 'session_resume', sessionId: this.session.sessionId, resumeToken: this.session.resumeToken };
      if (this.lastAckedSeq !== null) resume.lastSeq = this.lastAckedSeq;
      this.link.sendJson(resume);
    } else if (this.phase === 'lost') {
      this.phase = 'starting';
      this.link.dialect = 'sessions';
      const metadata = { client: 'aimcs-web', userAgent: navigator.userAgent };
      if (this.previousSessionId) metadata.previousSessionId = this.previousSessionId;
      this.link.sendJson({ type: 'session_start', format: PCM_FORMAT, metadata });
    }
  }

  onLost() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (['active', 'resuming', 'ending'].includes(this.phase)) this.phase = 'detached';
    else if (this.phase === 'starting') this.phase = 'lost';
  }

  onMessage(message) {
    switch (message.type) {
      case 'session_started':
        this.session = { sessionId: message.sessionId, recordingId: message.recordingId, resumeToken: message.resumeToken };
        this.nextSeq = 1;
        this.lastAckedSeq = null;
        this.phase = 'active';
        this.pump();
        break;
      case 'session_resumed':
        this.resumed(message.lastSeq);
        break;
      case 'audio_received':
        this.acknowledged(message);
        break;
      case 'session_ended':
        this.phase = 'ended';
        this.ended = message;
        this.events.onEnded(message);
        if (this.whenEnded) this.whenEnded(message);
        break;
      case 'going_away':
        // The server is stopping: everything up to lastSeq is stored, the session is over.
        if (this.session && message.sessionId === this.session.sessionId) this.sessionLost(message.lastSeq);
        break;
      case 'error':
        this.refused(message);
        break;
      default:
    }
  }

  resumed(serverLastSeq) {
    const stored = serverLastSeq ?? 0;
    const kept = this.unacked.filter((chunk) => chunk.seq > stored);
    this.stats.storedUnacked += this.unacked.length - kept.length;
    this.stats.resumes += 1;
    if (kept.length > 0 ? kept[0].seq !== stored + 1 : this.nextSeq !== stored + 1) {
      // The server holds a different count than the page sent: say so; numbering follows it.
      this.stats.seqMismatches += 1;
      this.events.onEvent(`resume: the server stored up to ${serverLastSeq}, the page expected ${this.nextSeq - 1}`);
      if (kept.length === 0) this.nextSeq = stored + 1;
    }
    this.unacked = kept;
    this.resend = kept.slice();
    if (serverLastSeq !== null) this.lastAckedSeq = serverLastSeq;
    this.events.onEvent(`resumed: ${this.stats.storedUnacked} stored chunks whose ack was lost, ${kept.length} to resend`);
    this.phase = 'active';
    this.pump();
  }

  acknowledged(message) {
    if (typeof message.seq !== 'number') return;
    const seq = message.seq;
    if (this.unacked.length > 0 && this.unacked[0].seq !== seq && !message.duplicate) this.stats.seqMismatches += 1;
    while (this.unacked.length > 0 && this.unacked[0].seq <= seq) this.unacked.shift();
    this.lastAckedSeq = seq;
    this.stats.ackedChunks = message.totalChunks;
    this.stats.ackedBytes = message.totalBytes;
    if (typeof message.durationMs === 'number') this.stats.durationMs = message.durationMs;
    if (message.duplicate) this.stats.duplicates += 1;
    if (message.gap) this.stats.gaps.push(message.gap);
    this.pump();
  }

  refused(message) {
    if (this.phase === 'resuming' && RESUME_FAILED.has(message.code)) {
      this.events.onEvent(`the session could not be resumed (${message.code}): starting a new one`);
      this.sessionLost(null);
      this.onReady();
    } else if (this.phase === 'starting') {
      this.phase = 'idle';
      this.events.onFailed(message);
    } else if (this.phase === 'active' && CHUNK_REFUSED.has(message.code) && this.unacked.length > 0) {
      // Replies come in order: this error stands for the oldest unacknowledged chunk. The
      // server numbers binary frames after its last *stored* chunk, so the frames already
      // sent behind it took its number; the chunk is lost, say so and follow the server.
      this.unacked.shift();
      this.stats.refused += 1;
      for (const chunk of this.unacked) chunk.seq -= 1;
      this.nextSeq -= 1;
    }
  }

  // The session cannot go on (the server finished it): its chunks that are not known to be
  // stored go to a new session, which names this one in its metadata.
  sessionLost(storedUpTo) {
    const unsure = this.unacked.filter((chunk) => storedUpTo === null || storedUpTo === undefined || chunk.seq > storedUpTo);
    this.pending = unsure.map((chunk) => chunk.bytes).concat(this.pending);
    this.unacked = [];
    this.resend = [];
    this.previousSessionId = this.session ? this.session.sessionId : null;
    this.session = null;
    this.nextSeq = 1;
    this.lastAckedSeq = null;
    this.stats.sessionsLost += 1;
    this.phase = 'lost';
  }

  pump() {
    if (this.phase !== 'active' || !this.link.open) return;
    while (this.resend.length > 0) {
      if (!this.link.budget.take()) return this.pumpLater();
      const chunk = this.resend.shift();
      this.link.sendJson({ type: 'audio', data: toBase64(chunk.bytes), seq: chunk.seq });
      this.stats.resent += 1;
    }
    while (this.pending.length > 0 && this.unacked.length < MAX_UNACKED) {
      if (!this.link.budget.take()) return this.pumpLater();
      const bytes = this.takePending();
      this.link.sendBinary(bytes);
      this.unacked.push({ seq: this.nextSeq, bytes });
      this.nextSeq += 1;
      this.stats.sentChunks += 1;
    }
    if (this.captureDone && this.pending.length === 0) {
      this.link.sendJson({ type: 'session_end' });
      this.phase = 'ending';
    }
    return undefined;
  }

  pumpLater() {
    if (this.pumpTimer === null) {
      this.pumpTimer = setTimeout(() => { this.pumpTimer = null; this.pump(); }, 20);
    }
  }

  // The next message's audio: one chunk, or a backlog (after a reconnect) joined into
  // messages of up to a second, so that catching up stays within the rate limit.
  takePending() {
    if (this.pending.length === 1 || this.pending[0].byteLength >= MAX_COALESCED_BYTES) return this.pending.shift();
    let size = 0;
    let count = 0;
    while (count < this.pending.length && size + this.pending[count].byteLength <= MAX_COALESCED_BYTES) {
      size += this.pending[count].byteLength;
      count += 1;
    }
    const joined = new Uint8Array(size);
    let offset = 0;
    for (const part of this.pending.splice(0, count)) {
      joined.set(part, offset);
      offset += part.byteLength;
    }
    return joined;
  }
}

function toBase64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

// ---------------------------------------------------------------------------------------
// Capture.

/** Microphone → AudioWorklet → 16 kHz PCM chunks. Raw: no echo cancellation, noise
 *  suppression or gain control, which would reshape what is recorded. */
class PcmCapture {
  async start(onChunk, onLevel) {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule('/pcm-worklet.js');
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, 'pcm-downsampler', {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: PCM_FORMAT.sampleRate, chunkMs: 20 },
    });
    this.node.port.onmessage = (event) => {
      if (event.data.pcm) {
        onChunk(new Uint8Array(event.data.pcm));
        onLevel(event.data.peak);
      } else if (event.data.flushed && this.flushed) {
        this.flushed();
      }
    };
    // The node writes silence; connecting it to the destination keeps the graph pulling it.
    this.source.connect(this.node).connect(this.context.destination);
    await this.context.resume();
  }

  /** Stops, after the worklet has posted its last partial chunk. */
  async stop() {
    if (this.node) {
      const flushed = new Promise((resolve) => { this.flushed = resolve; });
      this.node.port.postMessage('flush');
      await Promise.race([flushed, sleep(1000)]);
      this.source.disconnect();
      this.node.disconnect();
    }
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) await this.context.close();
  }
}

/** The original front end's capture, unchanged: its getUserMedia constraints, MediaRecorder
 *  with WebM/Opus, a chunk every 100 ms. A level meter is added beside it, not in its path. */
class OriginalCapture {
  async start(onBlob, onLevel) {
    this.onBlob = onBlob;
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, sampleRate: 16000 },
    });
    this.context = new AudioContext();
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.context.createMediaStreamSource(this.stream).connect(this.analyser);
    const samples = new Float32Array(this.analyser.fftSize);
    this.meterTimer = setInterval(() => {
      this.analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const value of samples) peak = Math.max(peak, Math.abs(value));
      onLevel(peak);
    }, 50);
    this.generation = 0;
    this.begin();
  }

  /** A new MediaRecorder: its first chunk carries the WebM header a new recording needs. */
  begin() {
    this.generation += 1;
    const generation = this.generation;
    this.recorder = new MediaRecorder(this.stream, { mimeType: 'audio/webm;codecs=opus' });
    this.recorder.ondataavailable = (event) => {
      if (event.data.size > 0) this.onBlob(event.data, generation);
    };
    this.stopped = new Promise((resolve) => { this.recorder.onstop = resolve; });
    this.recorder.start(100);
  }

  /** Ends the current MediaRecorder (its last chunk still comes), e.g. when the socket drops. */
  async pause() {
    if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
    await this.stopped;
  }

  async stop() {
    await this.pause();
    clearInterval(this.meterTimer);
    this.stream.getTracks().forEach((track) => track.stop());
    await this.context.close();
  }
}

/** `FileReader.readAsDataURL` without the `data:…;base64,` prefix, as the original sent it. */
function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

// ---------------------------------------------------------------------------------------
// The page.

const $ = (id) => document.getElementById(id);

const CONNECTION_TEXT = {
  disconnected: 'Disconnected',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Connection lost, reconnecting…',
};

class App {
  constructor() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.url = `${scheme}//${location.host}/ws/audio`;
    $('socket-url').textContent = this.url;
    this.link = new Link(this.url, {
      onReady: (message) => this.ready(message),
      onMessage: (message) => this.received(message),
      onLost: (why, code) => this.lost(why, code),
      onRefused: () => this.refused(),
      onState: () => this.render(),
    });
    this.mode = 'pcm';
    this.recording = 'idle'; // idle, starting, recording, stopping
    this.capture = null;
    this.pcm = null;
    this.original = null; // {captured, sent, acked, ackedBytes, sending}
    this.connectionId = null;
    this.log = [];
    this.errors = [];
    this.level = 0;
    this.renderQueued = false;

    $('connect').addEventListener('click', () => this.link.connect());
    $('disconnect').addEventListener('click', () => this.disconnect());
    $('start').addEventListener('click', () => this.startRecording());
    $('stop').addEventListener('click', () => this.stopRecording());
    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.addEventListener('change', () => { this.mode = radio.value; this.render(); });
      if (radio.checked) this.mode = radio.value;
    }
    this.render();
  }

  // Connection events.

  ready(message) {
    this.connectionId = message.connectionId;
    if (this.pcm) this.pcm.onReady();
    if (this.mode === 'original' && this.recording === 'recording' && this.capture && this.originalPaused) {
      // The original protocol cannot resume: a new connection gets a new recording.
      this.originalPaused = false;
      this.link.dialect = 'original';
      this.capture.begin();
      this.note('recording again, into a new file (the original protocol cannot resume)');
    }
    this.render();
  }

  lost(why, code) {
    this.note(why);
    if (this.pcm) this.pcm.onLost();
    // 4103: another connection resumed this session; it is no longer ours to resume.
    if (this.pcm && code === 4103 && this.pcm.session) this.pcm.sessionLost(null);
    if (this.mode === 'original' && this.recording === 'recording' && this.capture && !this.originalPaused) {
      this.originalPaused = true;
      this.capture.pause();
    }
    this.render();
  }

  /** The socket closed before the service greeted it: say what the usual causes are. */
  refused() {
    this.showError({ code: 'connect_failed', error: refusalHint(location.origin, this.url) });
  }

  received(message) {
    if (this.pcm) this.pcm.onMessage(message);
    if (message.type === 'audio_received' && this.original && typeof message.seq !== 'number') {
      this.original.acked += 1;
      this.original.ackedBytes += message.decodedSize || 0;
    }
    if (message.type === 'error') this.showError(message);
    if (message.type === 'going_away') this.note('the server is shutting down');
    if (message.type !== 'note') this.addLog(message);
    else this.note(message.message);
    this.render();
  }

  async disconnect() {
    if (this.recording === 'recording') await this.stopRecording();
    this.link.disconnect();
    this.note('disconnected');
  }

  // Recording.

  async startRecording() {
    if (this.recording !== 'idle') return;
    this.clearErrors();
    this.recording = 'starting';
    this.render();
    try {
      // A recording needs a connection that has carried nothing else: the original
      // protocol records a whole connection, and sessions cannot go back to it.
      if (!this.link.wanted) this.link.connect();
      else if (this.link.dialect === 'original' || (this.link.dialect === 'sessions' && this.mode === 'original')) this.link.renew();
      if (this.mode === 'pcm') await this.startPcm();
      else await this.startOriginal();
      this.recording = 'recording';
    } catch (error) {
      this.recording = 'idle';
      this.showError({ code: error.name || 'capture_failed', error: `cannot record: ${error.message}` });
      if (this.capture) await this.capture.stop().catch(() => {});
      this.capture = null;
      this.pcm = null;
    }
    this.render();
  }

  async startPcm() {
    // The microphone first: a session is started only once there is audio to put in it.
    // Chunks captured before the session exists wait in the session's queue.
    this.pcm = new PcmSession(this.link, {
      onEvent: (text) => this.note(text),
      onEnded: (message) => this.note(`recording ${message.recordingId} saved: ${formatSeconds(message.durationMs)}, ${message.totalChunks} chunks, ${message.gaps.length} gaps, ${message.duplicates} duplicates`),
      onFailed: (message) => { this.showError(message); this.stopRecording(); },
    });
    const pcm = this.pcm;
    this.capture = new PcmCapture();
    await this.capture.start((bytes) => pcm.capture(bytes), (peak) => this.setLevel(peak));
    pcm.start();
  }

  async startOriginal() {
    // The first chunk carries the WebM header: the socket must be open before it exists.
    await this.link.whenReady(OPEN_TIMEOUT_MS);
    const original = { captured: 0, sent: 0, acked: 0, ackedBytes: 0, sending: Promise.resolve() };
    this.original = original;
    this.originalPaused = false;
    this.capture = new OriginalCapture();
    await this.capture.start((blob, generation) => {
      original.captured += 1;
      // Read in order, so that fragments of one WebM stream go out in order.
      original.sending = original.sending.then(async () => {
        const data = await blobToBase64(blob);
        if (!this.link.open || generation !== this.capture.generation || this.originalPaused) return;
        this.link.dialect = 'original';
        this.link.sendJson({ type: 'audio', data, timestamp: new Date().toISOString() });
        original.sent += 1;
      });
    }, (peak) => this.setLevel(peak));
  }

  async stopRecording() {
    if (this.recording !== 'recording') return;
    this.recording = 'stopping';
    this.render();
    await this.capture.stop();
    if (this.pcm) {
      const ended = await Promise.race([this.pcm.finish(), sleep(END_TIMEOUT_MS)]);
      if (!ended) this.note('the session did not end in time; it is kept for resuming');
    } else if (this.original) {
      await this.original.sending;
      const deadline = performance.now() + END_TIMEOUT_MS;
      while (this.original.acked < this.original.sent && performance.now() < deadline) await sleep(50);
      this.note('the server finishes this recording when the connection closes');
    }
    this.capture = null;
    this.recording = 'idle';
    this.setLevel(0);
    this.render();
  }

  // Display.

  setLevel(peak) {
    this.level = peak;
    this.render();
  }

  addLog(message) {
    const last = this.log[0];
    const summary = summarise(message);
    // Acks and pongs come 50 times a second: one line per run of them, with a count.
    if (last && last.type === message.type && (message.type === 'audio_received' || message.type === 'pong')) {
      last.count += 1;
      last.text = summary;
      last.time = new Date();
    } else {
      this.log.unshift({ type: message.type, kind: message.type === 'error' ? 'error' : 'message', text: summary, count: 1, time: new Date() });
      this.log.length = Math.min(this.log.length, LOG_LINES);
    }
  }

  note(text) {
    this.log.unshift({ type: 'note', kind: 'note', text, count: 1, time: new Date() });
    this.log.length = Math.min(this.log.length, LOG_LINES);
    this.render();
  }

  showError(message) {
    const text = `${message.code}: ${message.error || message.message}`;
    if (this.errors[this.errors.length - 1] === text) return; // once per run of retries
    this.errors.push(text);
    this.errors = this.errors.slice(-3);
    this.render();
  }

  clearErrors() {
    this.errors = [];
  }

  render() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.paint();
    });
  }

  paint() {
    const { state } = this.link;
    $('connection-dot').dataset.state = state;
    setText('connection-state', CONNECTION_TEXT[state]);
    $('connect').disabled = this.link.wanted;
    $('disconnect').disabled = !this.link.wanted;
    $('start').disabled = this.recording !== 'idle';
    $('stop').disabled = this.recording !== 'recording';
    $('mode').disabled = this.recording !== 'idle';

    const recordingText = {
      idle: 'Not recording.',
      starting: 'Starting the microphone…',
      recording: this.mode === 'pcm' ? 'Recording (PCM session).' : 'Recording (original mode).',
      stopping: 'Stopping…',
    }[this.recording];
    setText('recording-state', recordingText);

    const percent = Math.round(levelPercent(this.level));
    $('level-fill').style.width = `${percent}%`;
    $('level-fill').toggleAttribute('data-loud', this.level > 0.9);
    const meter = $('level');
    if (String(percent) !== meter.getAttribute('aria-valuenow')) {
      meter.setAttribute('aria-valuenow', String(percent));
      meter.setAttribute('aria-valuetext', this.level > 0 ? `${Math.round(20 * Math.log10(this.level))} dB` : 'silent');
    }

    const errors = $('errors');
    errors.hidden = this.errors.length === 0;
    const errorText = this.errors.map((text) => `<p>${escapeHtml(text)}</p>`).join('');
    if (errors.innerHTML !== errorText) errors.innerHTML = errorText;

    const stats = this.stats();
    setText('stat-chunks', stats.chunks.toLocaleString('en'));
    setText('stat-bytes', stats.bytes.toLocaleString('en'));
    setText('stat-duration', stats.durationMs === null ? '–' : formatSeconds(stats.durationMs));
    setText('stat-rtt', this.link.rttMs === null ? '–' : `${this.link.rttMs.toFixed(1)} ms`);
    setText('stat-waiting', stats.waiting.toLocaleString('en'));
    setText('stat-reconnects', String(this.link.reconnects));
    const ids = [];
    if (this.connectionId) ids.push(`connection ${this.connectionId}`);
    if (this.pcm && this.pcm.session) ids.push(`recording ${this.pcm.session.recordingId}`);
    setText('ids', ids.join(' · '));

    const list = $('log');
    const items = this.log.map((entry) => {
      const count = entry.count > 1 ? ` ×${entry.count}` : '';
      const time = entry.time.toISOString().slice(11, 23);
      return `<li data-kind="${entry.kind}"><time>${time}</time>${escapeHtml(entry.text)}${count}</li>`;
    }).join('');
    if (list.innerHTML !== items) list.innerHTML = items;
  }

  stats() {
    if (this.pcm) {
      const s = this.pcm.stats;
      return { chunks: s.ackedChunks, bytes: s.ackedBytes, durationMs: s.durationMs, waiting: this.pcm.waiting };
    }
    if (this.original) {
      const o = this.original;
      return { chunks: o.acked, bytes: o.ackedBytes, durationMs: null, waiting: o.sent - o.acked };
    }
    return { chunks: 0, bytes: 0, durationMs: null, waiting: 0 };
  }

  /** Everything the end-to-end tests look at. */
  snapshot() {
    const pcm = this.pcm && {
      phase: this.pcm.phase,
      session: this.pcm.session && { sessionId: this.pcm.session.sessionId, recordingId: this.pcm.session.recordingId },
      previousSessionId: this.pcm.previousSessionId,
      nextSeq: this.pcm.nextSeq,
      pending: this.pcm.pending.length,
      unacked: this.pcm.unacked.length,
      ended: this.pcm.ended,
      ...this.pcm.stats,
    };
    return {
      connection: this.link.state,
      connectionId: this.connectionId,
      dialect: this.link.dialect,
      reconnects: this.link.reconnects,
      rttMs: this.link.rttMs,
      mode: this.mode,
      recording: this.recording,
      level: this.level,
      errors: this.errors.slice(),
      pcm,
      original: this.original && { captured: this.original.captured, sent: this.original.sent, acked: this.original.acked, ackedBytes: this.original.ackedBytes },
    };
  }
}

/** Why a socket may close before the greeting. The service checks a browser's origin on
 *  the upgrade: its own page is allowed on a loopback host and over HTTPS; elsewhere (plain
 *  HTTP under another name) the origin has to be configured. */
function refusalHint(origin, url) {
  return `the WebSocket ${url} closed before the service answered. If the service runs, it `
    + `refused this page's origin ${origin}: add it to the service's cors.allowed_origins `
    + '(APP_CORS__ALLOWED_ORIGINS), or open the page on localhost or over HTTPS.';
}

function summarise(message) {
  switch (message.type) {
    case 'connection': return `connection ${message.connectionId}`;
    case 'audio_received': {
      const seq = typeof message.seq === 'number' ? ` seq ${message.seq}` : '';
      const extra = message.duplicate ? ' (duplicate)' : message.gap ? ` (gap ${message.gap.from}–${message.gap.to})` : '';
      return `audio_received${seq}, ${message.decodedSize} bytes${extra}`;
    }
    case 'pong': return 'pong';
    case 'session_started': return `session_started ${message.sessionId}`;
    case 'session_resumed': return `session_resumed at seq ${message.lastSeq}`;
    case 'session_ended': return `session_ended: ${message.totalChunks} chunks, ${message.totalBytes} bytes`;
    case 'error': return `error ${message.code}: ${message.error}`;
    default: return JSON.stringify(message).slice(0, 160);
  }
}

/** A level of 0..1 on a −60..0 dB scale, as meters show it. */
function levelPercent(peak) {
  if (peak <= 0.001) return 0;
  return Math.max(0, Math.min(100, ((20 * Math.log10(peak) + 60) / 60) * 100));
}

function formatSeconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function setText(id, text) {
  const element = $(id);
  if (element.textContent !== text) element.textContent = text;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const app = new App();

window.aimcs = {
  state: () => app.snapshot(),
  /** Closes the socket as a failing network would (no session_end); the page reconnects. */
  dropSocket: () => app.link.drop('connection dropped (test)'),
  bytesPerSecond: BYTES_PER_SECOND,
};
