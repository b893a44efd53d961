/** Stue signalling protocol v1 (docs/protocol.md): message constructors and server-frame validation. No DOM, no sockets. */

export const MAX_FRAME_BYTES = 65536;
export const MAX_SDP_LENGTH = 60000;
export const MAX_CANDIDATE_LENGTH = 1024;
export const PING_INTERVAL_MS = 20000;

/** Close codes the server uses that end the session for good (no reconnect). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  TOO_LARGE: 1009,
  POLICY: 1008,
  INTERNAL: 1011,
  BAD_TOKEN: 4401,
  REPLACED: 4409,
});

/** @typedef {'citizen' | 'clinician'} Role */
/** @typedef {'left' | 'disconnected' | 'timeout' | 'replaced'} LeaveReason */
/** @typedef {{participant: string, role: Role, polite: boolean}} PeerEntry */
/**
 * Exactly the fields of RTCIceCandidateInit that the protocol allows.
 * @typedef {{candidate: string, sdpMid: string | null, sdpMLineIndex: number | null, usernameFragment: string | null}} CandidateObject
 */

/**
 * What a client shows to continue as the same participant after its socket dropped: the id and secret from its
 * latest `joined`, and how many frames it read after that `joined` on that socket (the server replays the rest).
 * @typedef {{participant: string, secret: string, received?: number}} Resume
 */
/** @typedef {{type: 'join', token: string, resume?: Resume}} JoinMessage */
/** @typedef {{type: 'offer' | 'answer', to: string, sdp: string}} DescriptionOut */
/** @typedef {{type: 'candidate', to: string, candidate: CandidateObject | null}} CandidateOut */
/** @typedef {{type: 'leave'} | {type: 'ping'}} BareOut */
/** @typedef {JoinMessage | DescriptionOut | CandidateOut | BareOut} ClientMessage */

/**
 * @typedef {{type: 'joined', participant: string, role: Role, consultation: string,
 *            peers: PeerEntry[], ice_servers: RTCIceServer[], resume: string | null, resumed: boolean,
 *            held: number}} JoinedMessage
 * @typedef {{type: 'peer-joined', participant: string, role: Role, polite: boolean}} PeerJoinedMessage
 * @typedef {{type: 'peer-left', participant: string, reason: LeaveReason}} PeerLeftMessage
 * @typedef {{type: 'offer' | 'answer', from: string, sdp: string}} DescriptionIn
 * @typedef {{type: 'candidate', from: string, candidate: CandidateObject | null}} CandidateIn
 * @typedef {{type: 'pong'}} PongMessage
 * @typedef {{type: 'error', code: string, message: string, ref: string | null}} ErrorMessage
 * @typedef {JoinedMessage | PeerJoinedMessage | PeerLeftMessage | DescriptionIn | CandidateIn | PongMessage | ErrorMessage} ServerMessage
 */

/** A server frame that does not follow the protocol. */
export class ProtocolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const TOKEN_RE = /^[A-Za-z0-9_-]{16,128}$/;
const ROLES = new Set(['citizen', 'clinician']);
const LEAVE_REASONS = new Set(['left', 'disconnected', 'timeout', 'replaced']);

/**
 * The token from a link's fragment (`#t=<token>`), or null when absent or malformed.
 * @param {string} hash location.hash, with or without the leading '#'
 * @returns {string | null}
 */
export function tokenFromFragment(hash) {
  const params = new URLSearchParams(hash.startsWith('#') ? hash.slice(1) : hash);
  const token = params.get('t');
  return token !== null && TOKEN_RE.test(token) ? token : null;
}

/**
 * The signalling URL for a page: its origin plus /ws, ws: for http: and wss: for https:.
 * @param {{protocol: string, host: string}} location
 */
export function socketUrl(location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

// ---- client → server -------------------------------------------------------------------------

/**
 * @param {string} token
 * @param {Resume | null} [resume]  from the last `joined`: continue as that participant if the server still can
 * @returns {JoinMessage}
 */
export function join(token, resume = null) {
  if (!TOKEN_RE.test(token)) throw new RangeError('token must be 16–128 URL-safe characters');
  if (!resume) return { type: 'join', token };
  const { participant, secret, received } = resume;
  return { type: 'join', token, resume: received === undefined ? { participant, secret } : { participant, secret, received } };
}

/**
 * @param {'offer' | 'answer'} type
 * @param {string} to
 * @param {string} sdp
 * @returns {DescriptionOut}
 */
export function description(type, to, sdp) {
  if (sdp.length < 1 || sdp.length > MAX_SDP_LENGTH) throw new RangeError(`sdp length ${sdp.length} out of range`);
  return { type, to, sdp };
}

/**
 * A trickled candidate; null means end of candidates. Copies only the protocol's fields, so a browser
 * that adds members to RTCIceCandidateInit cannot produce an `unknown_field` error.
 * @param {string} to
 * @param {RTCIceCandidateInit | null} init
 * @returns {CandidateOut}
 */
export function candidate(to, init) {
  if (init === null) return { type: 'candidate', to, candidate: null };
  const text = init.candidate ?? '';
  if (text.length > MAX_CANDIDATE_LENGTH) throw new RangeError('candidate too long');
  return {
    type: 'candidate',
    to,
    candidate: {
      candidate: text,
      sdpMid: init.sdpMid ?? null,
      sdpMLineIndex: init.sdpMLineIndex ?? null,
      usernameFragment: init.usernameFragment ?? null,
    },
  };
}

/** @returns {BareOut} */
export function leave() {
  return { type: 'leave' };
}

/** @returns {BareOut} */
export function ping() {
  return { type: 'ping' };
}

/** @param {ClientMessage} message */
export function encode(message) {
  return JSON.stringify(message);
}

// ---- server → client -------------------------------------------------------------------------
// Required fields and their types are checked strictly; fields this version does not know are
// ignored rather than fatal, so a newer server cannot break a call in progress.

/** @param {unknown} value @returns {value is Record<string, unknown>} */
function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** @param {Record<string, unknown>} obj @param {string} key */
function str(obj, key) {
  const value = obj[key];
  if (typeof value !== 'string') throw new ProtocolError(`${key} must be a string`);
  return value;
}

/** @param {Record<string, unknown>} obj @param {string} key */
function participantId(obj, key) {
  const value = str(obj, key);
  if (value.length < 1 || value.length > 128) throw new ProtocolError(`${key} is not a participant id`);
  return value;
}

/** @param {Record<string, unknown>} obj @returns {Role} */
function role(obj) {
  const value = str(obj, 'role');
  if (!ROLES.has(value)) throw new ProtocolError(`unknown role ${value}`);
  return /** @type {Role} */ (value);
}

/** @param {Record<string, unknown>} obj */
function sdp(obj) {
  const value = str(obj, 'sdp');
  if (value.length < 1 || value.length > MAX_SDP_LENGTH) throw new ProtocolError('sdp length out of range');
  return value;
}

/**
 * @param {Record<string, unknown>} obj
 * @returns {number}
 */
function heldCount(obj) {
  const held = obj.held ?? 0;
  if (typeof held !== 'number' || !Number.isInteger(held) || held < 0) throw new ProtocolError('held must be a count');
  return held;
}

/**
 * @param {Record<string, unknown>} obj
 * @param {string} key
 * @returns {string | null}
 */
function optionalString(obj, key) {
  const value = obj[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new ProtocolError(`${key} must be a string or null`);
  return value;
}

/** @param {unknown} value @returns {CandidateObject | null} */
export function parseCandidate(value) {
  if (value === null) return null;
  if (!isObject(value)) throw new ProtocolError('candidate must be an object or null');
  const text = str(value, 'candidate');
  if (text.length > MAX_CANDIDATE_LENGTH) throw new ProtocolError('candidate too long');
  const index = value.sdpMLineIndex;
  if (index !== undefined && index !== null && !(Number.isInteger(index) && Number(index) >= 0 && Number(index) <= 1023)) {
    throw new ProtocolError('sdpMLineIndex out of range');
  }
  return {
    candidate: text,
    sdpMid: optionalString(value, 'sdpMid'),
    sdpMLineIndex: typeof index === 'number' ? index : null,
    usernameFragment: optionalString(value, 'usernameFragment'),
  };
}

/** @param {unknown} value @returns {PeerEntry} */
function parsePeerEntry(value) {
  if (!isObject(value)) throw new ProtocolError('peer entry must be an object');
  if (typeof value.polite !== 'boolean') throw new ProtocolError('polite must be a boolean');
  return { participant: participantId(value, 'participant'), role: role(value), polite: value.polite };
}

/** @param {unknown} value @returns {RTCIceServer} */
function parseIceServer(value) {
  if (!isObject(value)) throw new ProtocolError('ice server must be an object');
  const urls = value.urls;
  const urlList = typeof urls === 'string' ? [urls] : urls;
  if (!Array.isArray(urlList) || urlList.length === 0 || !urlList.every((u) => typeof u === 'string')) {
    throw new ProtocolError('ice server urls must be a string or a list of strings');
  }
  /** @type {RTCIceServer} */
  const server = { urls: /** @type {string[]} */ (urlList) };
  const username = optionalString(value, 'username');
  const credential = optionalString(value, 'credential');
  if (username !== null) server.username = username;
  if (credential !== null) server.credential = credential;
  return server;
}

/**
 * Parse and validate one text frame from the server.
 * @param {string} text
 * @returns {ServerMessage}
 * @throws {ProtocolError}
 */
export function parseServerFrame(text) {
  /** @type {unknown} */
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ProtocolError('frame is not JSON');
  }
  if (!isObject(data)) throw new ProtocolError('frame is not an object');
  const type = data.type;
  switch (type) {
    case 'joined': {
      if (!Array.isArray(data.peers)) throw new ProtocolError('peers must be a list');
      if (!Array.isArray(data.ice_servers)) throw new ProtocolError('ice_servers must be a list');
      return {
        type,
        participant: participantId(data, 'participant'),
        role: role(data),
        consultation: str(data, 'consultation'),
        peers: data.peers.map(parsePeerEntry),
        ice_servers: data.ice_servers.map(parseIceServer),
        // Absent from an older server: then there is nothing to resume with, and every join is new.
        resume: optionalString(data, 'resume'),
        resumed: data.resumed === true,
        // After a resume: the frames relayed to us while we were away, which follow at once.
        held: heldCount(data),
      };
    }
    case 'peer-joined': {
      if (typeof data.polite !== 'boolean') throw new ProtocolError('polite must be a boolean');
      return { type, participant: participantId(data, 'participant'), role: role(data), polite: data.polite };
    }
    case 'peer-left': {
      const reason = str(data, 'reason');
      if (!LEAVE_REASONS.has(reason)) throw new ProtocolError(`unknown reason ${reason}`);
      return { type, participant: participantId(data, 'participant'), reason: /** @type {LeaveReason} */ (reason) };
    }
    case 'offer':
    case 'answer':
      return { type, from: participantId(data, 'from'), sdp: sdp(data) };
    case 'candidate':
      if (!('candidate' in data)) throw new ProtocolError('candidate is required');
      return { type, from: participantId(data, 'from'), candidate: parseCandidate(data.candidate) };
    case 'pong':
      return { type };
    case 'error':
      return { type, code: str(data, 'code'), message: str(data, 'message'), ref: optionalString(data, 'ref') };
    default:
      throw new ProtocolError(`unknown type ${String(type)}`);
  }
}
