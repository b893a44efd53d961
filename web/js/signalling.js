/** The signalling WebSocket: join, keep-alive, reconnect with backoff and re-join, typed events. No DOM. */

import { Emitter } from './emitter.js';
import * as protocol from './protocol.js';

/** @typedef {import('./protocol.js').ServerMessage} ServerMessage */
/** @typedef {import('./protocol.js').ClientMessage} ClientMessage */

/** Connection state; every transition goes through #setState. */
export const SignallingState = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  JOINING: 'joining',
  JOINED: 'joined',
  RETRYING: 'retrying',
  CLOSED: 'closed',
});
/** @typedef {typeof SignallingState[keyof typeof SignallingState]} SignallingStateValue */

/** @type {Record<SignallingStateValue, SignallingStateValue[]>} */
const TRANSITIONS = {
  idle: ['connecting', 'closed'],
  connecting: ['joining', 'retrying', 'closed'],
  joining: ['joined', 'retrying', 'closed'],
  joined: ['retrying', 'closed'],
  retrying: ['connecting', 'closed'],
  closed: [],
};

/**
 * How long a `join` may go unanswered before the socket is taken for dead and replaced (a socket opened during the
 * preview may have died silently since: a tablet that slept, or moved to another network). Doubles with each
 * failed attempt, up to JOIN_REPLY_MAX_MS, so a slow network still gets through.
 */
export const JOIN_REPLY_TIMEOUT_MS = 5000;
const JOIN_REPLY_MAX_MS = 30000;
/** How long a liveness check (see Signalling.checkAlive) waits for any answer. */
export const LIVENESS_TIMEOUT_MS = 4000;

/** Why the session ended for good: the link is bad, or it was opened elsewhere. */
/** @typedef {'bad_token' | 'replaced'} FatalCode */

/**
 * @typedef {object} SignallingEvents
 * @property {{state: SignallingStateValue}} state
 * @property {import('./protocol.js').JoinedMessage & {rejoin: boolean}} joined
 * @property {import('./protocol.js').PeerJoinedMessage} peer-joined
 * @property {import('./protocol.js').PeerLeftMessage} peer-left
 * @property {import('./protocol.js').DescriptionIn} offer
 * @property {import('./protocol.js').DescriptionIn} answer
 * @property {import('./protocol.js').CandidateIn} candidate
 * @property {import('./protocol.js').ErrorMessage} server-error  a non-fatal `error` frame
 * @property {{attempt: number, delayMs: number, everJoined: boolean}} disconnected  lost; a retry is scheduled
 * @property {{code: FatalCode}} fatal  the session is over; no retry
 */

/**
 * @typedef {object} SignallingOptions
 * @property {string} url
 * @property {string} token
 * @property {WebSocket | null} [socket]  a socket opened ahead (at page load, before the tap), used first
 * @property {typeof WebSocket} [WebSocketImpl]
 * @property {number} [pingIntervalMs]
 * @property {number} [initialBackoffMs]
 * @property {number} [maxBackoffMs]
 */

/** @extends {Emitter<SignallingEvents>} */
export class Signalling extends Emitter {
  /** @type {SignallingStateValue} */
  #state = SignallingState.IDLE;
  /** @type {WebSocket | null} */
  #socket = null;
  #attempt = 0;
  #everJoined = false;
  #awaitingPong = false;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #pingTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #retryTimer;
  /** Set while we wait for the server to answer (a join, a liveness check): any frame clears it. */
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #replyTimer;
  /** @type {WebSocket | null} */
  #spare;
  /**
   * A resumed `joined` waits here while the frames held for us (relayed while we were away, right behind it) are
   * emitted: the peers apply those before the app repairs what the drop cost.
   * @type {(import('./protocol.js').JoinedMessage & {rejoin: boolean}) | null}
   */
  #joinedAfterHeld = null;
  #heldLeft = 0;
  /** From the last `joined`: lets a reconnect continue as the same participant, keeping its peer connections. */
  /** @type {import('./protocol.js').Resume | null} */
  #resume = null;
  /**
   * Frames read after the last `joined`, on its socket: a resume says it, and the server replays what it wrote
   * after them (frames written to a socket that was already dead, half-open after a network change, are lost).
   */
  #received = 0;
  #url;
  #token;
  #WebSocket;
  #pingIntervalMs;
  #initialBackoffMs;
  #maxBackoffMs;

  /** @param {SignallingOptions} options */
  constructor(options) {
    super();
    this.#url = options.url;
    this.#token = options.token;
    this.#spare = options.socket ?? null;
    this.#WebSocket = options.WebSocketImpl ?? WebSocket;
    this.#pingIntervalMs = options.pingIntervalMs ?? protocol.PING_INTERVAL_MS;
    this.#initialBackoffMs = options.initialBackoffMs ?? 1000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 15000;
  }

  get state() {
    return this.#state;
  }

  /** Open the socket (or take the one opened ahead) and join. */
  connect() {
    this.#setState(SignallingState.CONNECTING);
    let socket = this.#spare;
    this.#spare = null;
    const spare = socket !== null && socket.readyState <= this.#WebSocket.OPEN;
    if (!socket || !spare) {
      try {
        socket = new this.#WebSocket(this.#url);
      } catch (err) {
        console.warn('signalling: cannot open socket', err);
        this.#scheduleRetry();
        return;
      }
    }
    const opened = () => {
      if (this.#socket !== socket) return;
      this.#setState(SignallingState.JOINING);
      this.#write(protocol.join(this.#token, this.#resume && { ...this.#resume, received: this.#received }));
      const deadline = Math.min(JOIN_REPLY_MAX_MS, JOIN_REPLY_TIMEOUT_MS * 2 ** this.#attempt);
      // The socket opened ahead has sat idle for as long as the preview showed: if it died meanwhile, open a
      // fresh one at once, without telling anyone (the person only tapped Join). Otherwise, retry with backoff.
      this.#expectReply(deadline, 'join unanswered', spare ? () => this.connect() : undefined);
      this.#startPing();
    };
    this.#socket = socket;
    socket.onopen = opened;
    socket.onmessage = (event) => {
      if (this.#socket !== socket) return;
      if (typeof event.data !== 'string') return;
      if (this.#state === SignallingState.JOINED) this.#received += 1; // every frame the server wrote counts
      clearTimeout(this.#replyTimer);
      this.#replyTimer = undefined;
      this.#awaitingPong = false;
      this.#receive(event.data);
    };
    socket.onclose = (event) => {
      if (this.#socket !== socket) return;
      this.#onClose(event.code);
    };
    // onerror is always followed by onclose; nothing to do here.
    socket.onerror = () => {};
    if (socket.readyState === this.#WebSocket.OPEN) opened();
  }

  /**
   * Make sure the socket still reaches the server, now rather than at the next keep-alive: a media path that just
   * broke (ICE `disconnected`) usually means the network changed, and a socket may then stay open on our side
   * while nothing gets through. No answer within LIVENESS_TIMEOUT_MS: reconnect (and resume).
   */
  checkAlive() {
    if (this.#state !== SignallingState.JOINED || this.#replyTimer !== undefined) return;
    if (this.#write(protocol.ping())) this.#expectReply(LIVENESS_TIMEOUT_MS, 'no answer to a liveness check');
  }

  /**
   * Ping this often from now on (the next ping comes one new interval from now).
   * @param {number} ms
   */
  setPingInterval(ms) {
    if (ms === this.#pingIntervalMs) return;
    this.#pingIntervalMs = ms;
    if (this.#state === SignallingState.JOINED) this.#startPing();
  }

  /** When the browser says the network is back, skip the rest of the backoff. */
  retryNow() {
    if (this.#state !== SignallingState.RETRYING) return;
    clearTimeout(this.#retryTimer);
    this.connect();
  }

  /**
   * Send a message to the server; dropped (returns false) unless joined. Negotiation that is lost
   * this way is repaired after the resume (see Peer.repair), or redone by a re-join with new peers.
   * @param {ClientMessage} message
   */
  send(message) {
    if (this.#state !== SignallingState.JOINED) return false;
    return this.#write(message);
  }

  /** Leave the consultation for good: the others see `peer-left` at once. */
  leave() {
    this.#resume = null;
    if (this.#state === SignallingState.JOINED) this.#write(protocol.leave());
    this.close();
  }

  /** Stop without leaving explicitly (the server reports `disconnected`). */
  close() {
    if (this.#state === SignallingState.CLOSED) return;
    this.#teardownSocket(1000);
    clearTimeout(this.#retryTimer);
    this.#setState(SignallingState.CLOSED);
  }

  /** @param {ClientMessage} message */
  #write(message) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== this.#WebSocket.OPEN) return false;
    const text = protocol.encode(message);
    if (text.length > protocol.MAX_FRAME_BYTES) {
      console.warn(`signalling: ${message.type} frame too large, not sent`);
      return false;
    }
    socket.send(text);
    return true;
  }

  /** @param {string} text */
  #receive(text) {
    /** @type {ServerMessage} */
    let message;
    try {
      message = protocol.parseServerFrame(text);
    } catch (err) {
      console.warn('signalling: ignoring invalid frame', err);
      return;
    }
    switch (message.type) {
      case 'joined': {
        const rejoin = this.#everJoined;
        this.#everJoined = true;
        this.#attempt = 0;
        this.#received = 0;
        this.#resume = message.resume ? { participant: message.participant, secret: message.resume } : null;
        this.#setState(SignallingState.JOINED);
        if (message.held > 0) {
          this.#joinedAfterHeld = { ...message, rejoin };
          this.#heldLeft = message.held;
        } else {
          this.emit('joined', { ...message, rejoin });
        }
        return;
      }
      case 'pong':
        break;
      case 'error':
        if (message.code === 'bad_token' || message.code === 'replaced') {
          this.#fatal(message.code);
        } else {
          this.emit('server-error', message);
        }
        break;
      default:
        this.emit(message.type, /** @type {any} */ (message));
    }
    if (this.#joinedAfterHeld && --this.#heldLeft === 0) {
      const joined = this.#joinedAfterHeld;
      this.#joinedAfterHeld = null;
      this.emit('joined', joined);
    }
  }

  /** @param {number} code */
  #onClose(code) {
    if (code === protocol.CloseCode.BAD_TOKEN) return this.#fatal('bad_token');
    if (code === protocol.CloseCode.REPLACED) return this.#fatal('replaced');
    this.#teardownSocket();
    this.#scheduleRetry();
  }

  /** @param {FatalCode} code */
  #fatal(code) {
    this.#resume = null;
    if (this.#state === SignallingState.CLOSED) return;
    this.#teardownSocket(1000);
    clearTimeout(this.#retryTimer);
    this.#setState(SignallingState.CLOSED);
    this.emit('fatal', { code });
  }

  #scheduleRetry() {
    if (this.#state === SignallingState.CLOSED) return;
    this.#attempt += 1;
    const base = Math.min(this.#maxBackoffMs, this.#initialBackoffMs * 2 ** (this.#attempt - 1));
    // Jitter spreads the reconnects of many clients after a server restart.
    const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
    this.#setState(SignallingState.RETRYING);
    this.emit('disconnected', { attempt: this.#attempt, delayMs, everJoined: this.#everJoined });
    this.#retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  /**
   * Take the socket for dead unless some frame arrives within `ms`; then `next` (by default, retry with backoff).
   * @param {number} ms
   * @param {string} why
   * @param {() => void} [next]
   */
  #expectReply(ms, why, next) {
    clearTimeout(this.#replyTimer);
    this.#replyTimer = setTimeout(() => {
      this.#replyTimer = undefined;
      console.warn(`signalling: ${why} for ${ms} ms; reconnecting`);
      this.#teardownSocket();
      if (next) {
        this.#setState(SignallingState.RETRYING);
        next();
      } else {
        this.#scheduleRetry();
      }
    }, ms);
  }

  #startPing() {
    clearInterval(this.#pingTimer);
    this.#awaitingPong = false;
    this.#pingTimer = setInterval(() => {
      if (this.#awaitingPong) {
        // Nothing heard for a whole interval: the link is dead even if the socket has not noticed.
        console.warn('signalling: no pong, reconnecting');
        this.#teardownSocket();
        this.#scheduleRetry();
        return;
      }
      this.#awaitingPong = true;
      this.#write(protocol.ping());
    }, this.#pingIntervalMs);
  }

  /** @param {number} [closeCode] */
  #teardownSocket(closeCode) {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
    this.#joinedAfterHeld = null; // the next join says afresh what there is
    const socket = this.#socket;
    this.#socket = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (socket.readyState === this.#WebSocket.CONNECTING || socket.readyState === this.#WebSocket.OPEN) {
      try {
        socket.close(closeCode ?? 1000);
      } catch {
        // Closing a socket that is already going away can throw in some browsers; it is gone either way.
      }
    }
  }

  /** @param {SignallingStateValue} next */
  #setState(next) {
    if (next === this.#state) return;
    if (!TRANSITIONS[this.#state].includes(next)) {
      throw new Error(`signalling: illegal transition ${this.#state} → ${next}`);
    }
    this.#state = next;
    this.emit('state', { state: next });
  }
}
